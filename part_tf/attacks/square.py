"""The L-inf Square attack (Andriushchenko et al., ECCV 2020), as in AutoAttack.

A score-based black-box attack: it only evaluates `model_fn` (logits), never
its gradient, so it is not fooled by gradient masking. It follows the L-inf
`attack_single_run` of the AutoAttack reference (`autoattack/square.py`):

* start from vertical stripes: `x + eps * s` with a random sign `s` per
  example, column and channel;
* at iteration `i`, pick a square of side `round(sqrt(p(i) * H * W))` (at
  least 1) at a random position and set the perturbation inside it to a
  random sign per channel times `eps`;
* keep the proposal when the margin loss `z_y - max_{j != y} z_j` decreases
  (or the proposal is misclassified); an example that is misclassified is not
  changed any more;
* `p(i)` halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
  of a 10,000-query schedule rescaled to `num_queries` (`p_selection`), or,
  with `rescale_schedule=False` as AutoAttack runs it, not rescaled.

Differences from the reference, all deliberate:

* Each example gets its own square position and its own signs (the reference
  and ART draw one square for the whole batch), as in the paper's own code.
* The position is uniform over all `H - s + 1` valid offsets (the reference
  uses `randint(0, H - s)`, which never touches the last offset and fails when
  `s == H`).
* Examples misclassified on the clean input are returned unchanged (AutoAttack
  does the same: it only attacks correctly classified points).
* The budget may be an element-wise map (PART's pixel-reweighted budget): the
  `+-eps` values then come from the map.

Pure TensorFlow, batched over examples, with a `tf.while_loop` over queries,
so it runs inside `tf.function`. Randomness is stateless: iteration `i` uses
seeds folded from `seed` and `i`, so the same seed gives the same output.
"""

from typing import Callable

import tensorflow as tf

from part_tf.attacks import noise as noise_lib
from part_tf.attacks.losses import margin_violation

ModelFn = Callable[[tf.Tensor], tf.Tensor]

# Iterations (of a 10,000-query run) after which p is halved once more.
_P_BOUNDARIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init, iteration, num_queries, rescale_schedule=True):
  """Fraction of pixels to change at `iteration` (the reference schedule).

  `it = floor(iteration / num_queries * 10000)` (or `iteration` itself
  without `rescale_schedule`), and `p = p_init / 2**k` where
  `k` is the number of boundaries in (10, 50, 200, 500, 1000, 2000, 4000,
  6000, 8000) that are strictly below `it`.

  Args:
    p_init: fraction at the start (0.8 in AutoAttack), scalar.
    iteration: 0-based iteration index, int scalar (Python or tensor).
    num_queries: total number of iterations, int scalar (> 0).
    rescale_schedule: stretch the 10,000-query schedule to `num_queries`
      (AutoAttack's own runs use `False`: 5,000 queries then stop at the
      4000 boundary).

  Returns:
    float32 scalar tensor.
  """
  iteration = tf.cast(iteration, tf.int64)
  num_queries = tf.cast(num_queries, tf.int64)
  if not rescale_schedule:
    it = iteration
  else:
    it = (iteration * 10000) // num_queries   # exact int(i / n * 10000)
  halvings = tf.add_n([tf.cast(it > b, tf.int32) for b in _P_BOUNDARIES])
  return tf.cast(p_init, tf.float32) / tf.cast(
      tf.bitwise.left_shift(1, halvings), tf.float32)


def square_side(p, height, width):
  """Side `max(round(sqrt(p * H * W)), 1)`, at most min(H, W); int32 tensor."""
  area = tf.cast(p, tf.float32) * tf.cast(height * width, tf.float32)
  side = tf.cast(tf.round(tf.sqrt(area)), tf.int32)   # half to even, as Python
  return tf.clip_by_value(side, 1, tf.minimum(height, width))


def _random_signs(shape, seed, dtype):
  bits = noise_lib.uniform(shape, seed=seed, minval=0, maxval=2,
                           dtype=tf.int32)
  return tf.cast(2 * bits - 1, dtype)


def square(model_fn: ModelFn,
           x: tf.Tensor,
           y: tf.Tensor,
           eps,
           num_queries: int = 1000,
           p_init: float = 0.8,
           seed=(0, 0),
           rescale_schedule: bool = True) -> tf.Tensor:
  """Untargeted L-inf Square attack (black-box: model outputs only).

  Args:
    model_fn: maps a batch of images in [0, 1] to logits (call the model with
      `training=False`). Only its outputs are used; no gradient is taken.
    x: clean images, float, values in [0, 1], shape [B, H, W, C].
    y: integer labels, shape [B].
    eps: the budget, a scalar or a map broadcastable to `x` (non-negative).
    num_queries: number of iterations (one model evaluation each, after one
      for the clean input and one for the stripes), int or int tensor; the
      loop stops early once every example is misclassified.
    p_init: initial fraction of pixels in the square (0.8 in AutoAttack).
    seed: stateless seed, shape [2] (int32/int64).
    rescale_schedule: stretch the schedule of `p` to `num_queries` (see
      `p_selection`; AutoAttack runs Square with `False`).

  Returns:
    `x_adv` of the shape and dtype of `x`, with `|x_adv - x| <= eps` and
    values in [0, 1]; no gradient flows back through it.

  Example:
    >>> x_adv = square(lambda z: model(z, training=False), x, y, eps=0.3,
    ...                num_queries=500, seed=(1, 2))
  """
  x = tf.stop_gradient(tf.convert_to_tensor(x))
  dtype = x.dtype
  y = tf.cast(tf.convert_to_tensor(y), tf.int32)
  eps_map = tf.broadcast_to(tf.cast(eps, dtype), tf.shape(x))
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  num_queries = tf.cast(num_queries, tf.int32)

  shape = tf.shape(x)
  batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]

  def margin(x_in):
    # z_y - max_{j != y} z_j: lower is better for the attacker, <= 0 fooled.
    return -margin_violation(model_fn(x_in), y)

  def project(x_in):
    delta = tf.clip_by_value(x_in - x, -eps_map, eps_map)
    return tf.clip_by_value(x + delta, 0.0, 1.0)

  # Clean margins: misclassified examples are left as they are.
  margin_clean = margin(x)

  # Vertical stripes: one sign per example, column and channel.
  init_seed = tf.random.experimental.stateless_fold_in(seed, -1)
  stripes = _random_signs(tf.stack([batch, 1, width, channels]), init_seed,
                          dtype)
  x_init = project(x + eps_map * stripes)
  margin_init = margin(x_init)
  attack = margin_clean > 0.0
  x_best = tf.where(attack[:, None, None, None], x_init, x)
  margin_min = tf.where(attack, margin_init, margin_clean)

  rows = tf.range(height)
  cols = tf.range(width)

  def cond(i, x_best, margin_min):
    del x_best
    return tf.logical_and(i < num_queries, tf.reduce_any(margin_min > 0.0))

  def body(i, x_best, margin_min):
    step_seed = tf.random.experimental.stateless_fold_in(seed, i)
    seeds = tf.random.experimental.stateless_split(step_seed, num=3)
    side = square_side(
        p_selection(p_init, i, num_queries, rescale_schedule), height, width)
    top = noise_lib.uniform([batch], seed=seeds[0], minval=0,
                            maxval=height - side + 1, dtype=tf.int32)
    left = noise_lib.uniform([batch], seed=seeds[1], minval=0,
                             maxval=width - side + 1, dtype=tf.int32)
    in_rows = ((rows[None, :] >= top[:, None]) &
               (rows[None, :] < top[:, None] + side))            # [B, H]
    in_cols = ((cols[None, :] >= left[:, None]) &
               (cols[None, :] < left[:, None] + side))           # [B, W]
    in_square = (in_rows[:, :, None, None] &
                 in_cols[:, None, :, None])                      # [B,H,W,1]
    signs = _random_signs(tf.stack([batch, 1, 1, channels]), seeds[2], dtype)
    x_new = tf.ensure_shape(
        project(tf.where(in_square, x + eps_map * signs, x_best)), x.shape)
    margin_new = margin(x_new)
    # Accept where the margin improves or the proposal is misclassified
    # (the latter only matters for a zero-margin tie); only for examples
    # that are not fooled yet.
    accept = ((margin_new < margin_min) | (margin_new <= 0.0)) & (
        margin_min > 0.0)
    x_best = tf.where(accept[:, None, None, None], x_new, x_best)
    margin_min = tf.where(accept, margin_new, margin_min)
    return i + 1, x_best, margin_min

  _, x_best, _ = tf.while_loop(cond, body, (tf.constant(0), x_best, margin_min))
  return tf.stop_gradient(x_best)
