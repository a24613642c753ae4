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

import tensorflow as tf


def jensen_shannon(logits1, logits2, temperature):
  """Per-example JS divergence of the temperature-`T` softmaxes."""
  t = tf.constant(temperature, tf.float32)
  p1 = tf.nn.softmax(tf.cast(logits1, tf.float32) / t)
  p2 = tf.nn.softmax(tf.cast(logits2, tf.float32) / t)
  log_m = tf.math.log(tf.maximum(0.5 * (p1 + p2), 1e-8))
  kl1 = tf.reduce_sum(tf.math.xlogy(p1, p1) - p1 * log_m, axis=-1)
  kl2 = tf.reduce_sum(tf.math.xlogy(p2, p2) - p2 * log_m, axis=-1)
  return 0.5 * (kl1 + kl2)


class Consistency:
  """JS consistency of the AEs of two views of each example.

  The batch arrives as `[B, 2, H, W, C]` and the model trains on it as
  `[2B, H, W, C]` (all first views, then all second views); this term is
  given to both copies of an example, so its mean over the 2B rows is the
  paper's mean over the B examples.

  Args:
    temperature: the sharpening temperature T.
  """
  needs_features = False
  needs_views = True

  def __init__(self, temperature: float = 0.5):
    if temperature <= 0:
      raise ValueError(f"consistency temperature must be > 0, got "
                       f"{temperature}")
    self.temperature = float(temperature)

  def __call__(self, out, y):
    del y
    first, second = tf.split(out.logits("adv"), 2, axis=0)
    js = jensen_shannon(first, second, self.temperature)
    return tf.concat([js, js], axis=0)

  def update(self, out, y, weights):
    del out, y, weights
