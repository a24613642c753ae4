"""The random draws of the attacks: stateless, one row per example, and the
same for an example however a batch is split between replicas.

Outside `rows_of` a draw is plain `tf.random.stateless_*` of the batch's
shape. Inside `rows_of(start, size, total)` (set while tracing a replica's
share of `size` examples, from `start`, of a batch of `total`), a draw is made for
the whole batch and the share's rows are taken: an attack then gives each
example exactly what it gives it on one device (see
`attack_suite.evaluate(strategy=...)`). The draw costs little next to the
attack's forward and backward passes.
"""

import contextlib
import threading

import tensorflow as tf

_state = threading.local()


@contextlib.contextmanager
def rows_of(start, size, total):
  """Draws inside take the rows `[start, start + size)` of a `total`-row
  draw; a draw for `k * size` rows (an attack that runs `k` copies of the
  share, copy-major as `tf.tile` lays them out) takes those rows of each of
  `k` copies of the whole batch."""
  start = tf.cast(start, tf.int32)
  with rows_at(tf.range(start, start + tf.cast(size, tf.int32)), total):
    yield


@contextlib.contextmanager
def rows_at(rows, total):
  """Like `rows_of`, for any rows: draws inside take the rows `rows` (int
  [size], in the order given) of a `total`-row draw. An attack run on the
  examples of a batch that are still robust (`attack_suite.evaluate_sequence`)
  then gives each of them the draws it gets in a run on the whole batch."""
  previous = getattr(_state, "window", None)
  _state.window = (tf.cast(rows, tf.int32), tf.cast(total, tf.int32))
  try:
    yield
  finally:
    _state.window = previous


def _draw(sample, shape):
  window = getattr(_state, "window", None)
  if window is None:
    return sample(shape)
  rows, total = window
  size = tf.size(rows)
  shape = tf.convert_to_tensor(shape, tf.int32)
  tf.debugging.assert_equal(
      shape[0] % tf.maximum(size, 1), 0,
      message="a draw inside rows_of/rows_at must be for a whole number of "
      "copies of the rows")
  copies = shape[0] // tf.maximum(size, 1)
  full = sample(tf.concat([[copies * total], shape[1:]], 0))
  full = tf.reshape(full, tf.concat([[copies, total], shape[1:]], 0))
  return tf.reshape(tf.gather(full, rows, axis=1), shape)


def run_seed(seed, index) -> tf.Tensor:
  """The stateless seed of an attack's run `index` (a restart or a target;
  a Python int or a scalar tensor): `seed` shifted by `index` in its second
  element, `seed` itself for run 0."""
  return tf.cast(tf.convert_to_tensor(seed), tf.int64) + tf.constant(
      [0, 1], tf.int64) * tf.cast(index, tf.int64)


def uniform(shape, seed, minval, maxval, dtype):
  """`tf.random.stateless_uniform` with rows that follow the example."""
  return _draw(lambda s: tf.random.stateless_uniform(
      s, seed=seed, minval=minval, maxval=maxval, dtype=dtype), shape)


def normal(shape, seed, dtype):
  """`tf.random.stateless_normal` with rows that follow the example."""
  return _draw(lambda s: tf.random.stateless_normal(s, seed=seed,
                                                    dtype=dtype), shape)
