"""Feature alignment (Liu & JaJa, "Feature Prioritization and Regularization
Improve Standard Accuracy and Adversarial Robustness", IJCAI 2019, arXiv
1810.02424): the squared L2 distance between the penultimate features of a
clean image and of its AE,

  lambda * || g(x) - g(x_adv) ||_2^2,

both sides differentiated, per example (its mean over the batch is the
paper's batch average). The paper applies it to the features after its
attention module; here `g` is the layer named by `--feature_layer` (default:
the penultimate layer), and no attention module is added. No code of the
paper is public.
"""

import tensorflow as tf


class FeatureAlignment:
  """Squared L2 distance of clean and adversarial features."""
  needs_features = True
  needs_views = False

  def __call__(self, out, y):
    del y
    return tf.reduce_sum(
        tf.square(out.features("clean") - out.features("adv")), axis=-1)

  def update(self, out, y, weights):
    del out, y, weights
