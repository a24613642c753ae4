"""Consistency regularisation (Tack, Yu, Jeong, Kim, Hwang & Shin, AAAI 2022,
arXiv 2103.04623, Eq. 3 and 4).

Each training example comes as two augmentations; the method crafts an AE of
each and trains on both (its loss is the mean over the 2B examples), plus

  lambda * JS(s_T(f(x1_adv)), s_T(f(x2_adv))),
  JS(p1, p2) = (KL(p1 || m) + KL(p2 || m)) / 2,  m = (p1 + p2) / 2,

with s_T the softmax at temperature T (no T^2 factor, both sides
differentiated), as in the authors' code (alinlab/consistency-adversarial,
`training/__init__.py: _jensen_shannon_div`, m clamped at 1e-8). Defaults
there: lambda = 1, T = 0.5.
"""

import dataclasses

from part_tf import lazy
from part_tf.config import setting
from part_tf.regularisers import base

tf = lazy.load("tensorflow")

VIEW_AUGMENTATIONS = ("crop_flip", "randaugment")


def jensen_shannon(logits1, logits2, temperature):
  """Per-example JS divergence of the temperature-`T` softmaxes."""
  t = tf.constant(temperature, tf.float32)
  p1 = tf.nn.softmax(tf.cast(logits1, tf.float32) / t)
  p2 = tf.nn.softmax(tf.cast(logits2, tf.float32) / t)
  log_m = tf.math.log(tf.maximum(0.5 * (p1 + p2), 1e-8))
  kl1 = tf.reduce_sum(tf.math.xlogy(p1, p1) - p1 * log_m, axis=-1)
  kl2 = tf.reduce_sum(tf.math.xlogy(p2, p2) - p2 * log_m, axis=-1)
  return 0.5 * (kl1 + kl2)


@base.register("consistency")
@dataclasses.dataclass(frozen=True)
class Consistency(base.Regulariser):
  """JS consistency of the AEs of two views of each example.

  The batch arrives as `[B, 2, H, W, C]` and the model trains on it as
  `[2B, H, W, C]` (all first views, then all second views); this term is
  given to both copies of an example, so its mean over the 2B rows is the
  paper's mean over the B examples.

  Attributes:
    weight: consistency regularisation (Tack et al., AAAI 2022): weight of
      the JS divergence between the AEs of two augmentations of each example
      (paper: 1.0; 0: off).
    temperature: its sharpening temperature (paper: 0.5).
    views: its views: crop_flip (the dataset's crop and flip), or
      randaugment: then Keras' RandAugment (2 operations per image) and
      Cutout of half the side, the nearest to the paper's crop + flip +
      AutoAugment + Cutout (Keras has no AutoAugment).
  """
  num_views = 2
  weight: float = setting(1.0, kind="float", low=0)
  temperature: float = setting(0.5, kind="float", low=0, low_open=True)
  views: str = setting("crop_flip", kind="enum", choices=VIEW_AUGMENTATIONS)

  def term(self, out, y, state=None):
    del y, state
    first, second = tf.split(out.logits("adv"), 2, axis=0)
    js = jensen_shannon(first, second, self.temperature)
    return tf.concat([js, js], axis=0)

  def view_augmentation(self) -> str:
    return self.views

  @classmethod
  def check_off(cls, values: dict) -> None:
    """Views other than crop_flip asked for without consistency: they would
    be silently ignored."""
    views = values.get("consistency_views")
    if views not in (None, VIEW_AUGMENTATIONS[0]):
      raise ValueError(f"consistency_views={views} augments consistency "
                       "regularisation's views: it needs consistency_weight "
                       "> 0")

  def check_run(self, config, spec=None) -> None:
    """Its two views are two augmentations of each image: the run must
    augment, and the dataset must have augmentation (or the views add
    it)."""
    if not config.data.augment:
      raise ValueError("consistency_weight needs augment: its two views are "
                       "two augmentations of each image (noaugment turns "
                       "augmentation off)")
    if (spec is not None and not (spec.crop_padding or spec.flip)
        and self.views == "crop_flip"):
      raise ValueError(
          f"consistency_weight compares two augmentations of each image, but "
          f"{config.data.dataset} is trained without augmentation (no crop "
          "padding, no flip; consistency_views=randaugment adds some)")
