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
the same update). They are a non-trainable weight of the model, so backups,
resumes and `classifier`-free checkpoints carry them. Wen et al.'s defaults:
lambda = 0.003, alpha = 0.5.
"""

import keras
import tensorflow as tf

from part_tf import distribution


class CenterLoss(keras.layers.Layer):
  """Learned class centres of the penultimate features.

  A layer only to hold (and save) its weight; it is not called.

  Args:
    num_classes: number of classes.
    feature_dim: size of the (flattened) features.
    center_lr: the centres' update rate alpha.
  """
  needs_features = True
  needs_views = False

  def __init__(self, num_classes: int, feature_dim: int,
               center_lr: float = 0.5, **kwargs):
    super().__init__(**kwargs)
    if not 0 < center_lr <= 1:
      raise ValueError(f"center_lr must be in (0, 1], got {center_lr}")
    self.center_lr = float(center_lr)
    self.centres = self.add_weight(
        name="centres", shape=(int(num_classes), int(feature_dim)),
        initializer="zeros", trainable=False, dtype="float32",
        aggregation="only_first_replica")
    self.built = True

  def __call__(self, out, y):  # pylint: disable=arguments-differ
    features = out.features("adv")
    centres = tf.gather(tf.convert_to_tensor(self.centres), y)
    return 0.5 * tf.reduce_sum(tf.square(features - centres), axis=-1)

  def update(self, out, y, weights):
    """Wen et al.'s centre update from this step's adversarial features.

    `weights` [B] weigh each example's part (1 in Wen et al.; a sample
    weight of 0, or the stand-in of an empty replica, adds nothing). With
    two views (consistency) each view's AE counts as an example.
    """
    features = tf.stop_gradient(out.features("adv"))
    centres = tf.convert_to_tensor(self.centres)
    onehot = tf.one_hot(y, tf.shape(centres)[0]) * weights[:, None]
    counts = distribution.sum_over_replicas(tf.reduce_sum(onehot, axis=0))
    sums = distribution.sum_over_replicas(
        tf.matmul(onehot, features, transpose_a=True))
    delta = (counts[:, None] * centres - sums) / (1.0 + counts[:, None])
    self.centres.assign_sub(self.center_lr * delta)
