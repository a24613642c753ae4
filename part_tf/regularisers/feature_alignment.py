"""Feature alignment (Liu & JaJa, "Feature Prioritization and Regularization
Improve Standard Accuracy and Adversarial Robustness", IJCAI 2019, arXiv
1810.02424): the squared L2 distance between the penultimate features of a
clean image and of its AE,

  lambda * || g(x) - g(x_adv) ||_2^2,

both sides differentiated, per example (its mean over the batch is the
paper's batch average). The paper applies it to the features after its
attention module; here `g` is the layer named by `feature_layer` (default:
the penultimate layer), and no attention module is added. No code of the
paper is public.
"""

import dataclasses

from part_tf import lazy
from part_tf.config import setting
from part_tf.regularisers import base

tf = lazy.load("tensorflow")


@base.register("feature_alignment")
@dataclasses.dataclass(frozen=True)
class FeatureAlignment(base.Regulariser):
  """Squared L2 distance of clean and adversarial features.

  Attributes:
    weight: feature alignment (Liu & JaJa, IJCAI 2019): weight of the
      squared L2 distance of clean and adversarial penultimate features (0:
      off; the paper gives no default that we could check, so give one).
    layer: layer the feature regularisers read (default: the penultimate
      layer, the input of the logits).
  """
  uses_features = True
  weight: float | None = setting(None, kind="float", low=0)
  layer: str | None = setting(kind="str", flag="feature_layer")

  def term(self, out, y, state=None):
    del y, state
    return tf.reduce_sum(tf.square(out.features("clean", self.layer)
                                   - out.features("adv", self.layer)),
                         axis=-1)

  def feature_layer(self):
    return self.layer
