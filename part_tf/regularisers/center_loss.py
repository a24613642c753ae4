"""Center loss on adversarial features (Agarwal, Nguyen & Schonfeld,
"Improving Adversarial Robustness by Encouraging Discriminative Features",
ICIP 2019, arXiv 1811.00621), with the centre loss and centre update of Wen,
Zhang, Li & Qiao (ECCV 2016, Eq. 2 and 4):

  lambda * 1/2 || f(x_adv) - c_y ||_2^2                   per example
  c_j <- c_j - alpha * sum_i [y_i = j] (c_j - f_i) / (1 + sum_i [y_i = j])

(with sample weights w_i, [y_i = j] becomes w_i [y_i = j]; Wen et al. have
w_i = 1).

The centres start at 0, are not trained by gradient (the term's gradient
reaches the features only) and are updated after each optimiser step from the
batch's adversarial features, summed over all replicas (every replica applies
the same update). They are a non-trainable weight of the model, so backups
and resumes carry them. Wen et al.'s defaults: lambda = 0.003, alpha = 0.5.
"""

import dataclasses

from part_tf import lazy
from part_tf.config import setting
from part_tf.regularisers import base

tf = lazy.load("tensorflow")
distribution = lazy.load("part_tf.distribution")
state_layers = lazy.load("part_tf.training.state")


@base.register("center_loss")
@dataclasses.dataclass(frozen=True)
class CenterLoss(base.Regulariser):
  """Learned class centres of the penultimate features.

  Attributes:
    weight: center loss on adversarial features (Agarwal et al., ICIP 2019;
      Wen et al.'s default 0.003; 0: off).
    lr: update rate alpha of the class centres (Wen et al.: 0.5).
    layer: layer the feature regularisers read (default: the penultimate
      layer, the input of the logits).
  """
  uses_features = True
  weight: float = setting(0.003, kind="float", low=0)
  lr: float = setting(0.5, kind="float", low=0, high=1, low_open=True,
                      flag="center_lr")
  layer: str | None = setting(kind="str", flag="feature_layer")

  def feature_layer(self):
    return self.layer

  def build(self, num_classes, feature_dim):
    """The centres: a [classes, features] non-trainable weight."""
    return state_layers.Centres(num_classes, feature_dim,
                                name="center_loss")

  def term(self, out, y, state=None):
    features = out.features("adv", self.layer)
    centres = tf.gather(tf.convert_to_tensor(state.centres), y)
    return 0.5 * tf.reduce_sum(tf.square(features - centres), axis=-1)

  def update(self, out, y, weights, state):
    """Wen et al.'s centre update from this step's adversarial features.

    `weights` [B] weigh each example's part (1 in Wen et al.; a sample
    weight of 0, or the stand-in of an empty replica, adds nothing). With
    two views (consistency) each view's AE counts as an example.
    """
    features = tf.stop_gradient(out.features("adv", self.layer))
    centres = tf.convert_to_tensor(state.centres)
    onehot = tf.one_hot(y, tf.shape(centres)[0]) * weights[:, None]
    counts = distribution.sum_over_replicas(tf.reduce_sum(onehot, axis=0))
    sums = distribution.sum_over_replicas(
        tf.matmul(onehot, features, transpose_a=True))
    delta = (counts[:, None] * centres - sums) / (1.0 + counts[:, None])
    state.centres.assign_sub(self.lr * delta)
