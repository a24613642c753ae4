"""Per-example losses that attacks ascend (and that the base methods reuse).

Each takes logits and a per-example target and returns a [B] tensor; the
attack ascends their sum.
"""

import tensorflow as tf


def cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
  """Softmax cross-entropy with integer labels (PGD / AT / MART)."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(y, tf.int32), logits=tf.cast(logits, tf.float32))


def kl_from_clean(logits: tf.Tensor, clean_probs: tf.Tensor) -> tf.Tensor:
  """KL(clean_probs || softmax(logits)) (TRADES' attack and robust term)."""
  log_adv = tf.nn.log_softmax(tf.cast(logits, tf.float32))
  clean_probs = tf.cast(clean_probs, tf.float32)
  return tf.reduce_sum(
      tf.math.xlogy(clean_probs, clean_probs) - clean_probs * log_adv, axis=-1)


def targeted_margin(logits: tf.Tensor, labels_and_targets: tf.Tensor
                    ) -> tf.Tensor:
  """z_target - z_true, for targets [B, 2] = (true class, target class) (MMA)."""
  logits = tf.cast(logits, tf.float32)
  pairs = tf.cast(labels_and_targets, tf.int32)
  return (tf.gather(logits, pairs[:, 1], batch_dims=1) -
          tf.gather(logits, pairs[:, 0], batch_dims=1))


def margin_violation(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
  """max_{j != y} z_j - z_y: positive when the example is misclassified."""
  logits = tf.cast(logits, tf.float32)
  y = tf.cast(y, tf.int32)
  true = tf.gather(logits, y, batch_dims=1)
  others = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0,
                    tf.constant(-float("inf"), logits.dtype), logits)
  return tf.reduce_max(others, axis=-1) - true
