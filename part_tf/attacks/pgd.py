"""L-inf PGD with an element-wise budget, composed from small parts.

An attack is `pgd(...)` plus four pluggable pieces, in the style of
deepmind-research `adversarial_robustness`:

* an init function `init_fn(x, eps_map, seed) -> x_start`,
* a loss `loss_fn(logits, y) -> per-example loss` that the attack ascends
  (see `losses.py`),
* an update `sign_step(x_adv, grad, step_size) -> x_adv`,
* a projection `project_linf(x_adv, x, eps_map) -> x_adv`.

The budget `eps_map` has the shape of `x`; a uniform budget is just a constant
map, and PART's pixel-reweighted budget is another map through the same
projection. Everything is pure TensorFlow and runs inside `tf.function` and
under XLA (`jit_compile=True`). Randomness is stateless: a `seed` of shape [2]
(int32/int64) fixes the random start, so a step is reproducible and two
attacks given the same seed start from the same point.
"""

from typing import Callable

import tensorflow as tf

from part_tf.attacks import noise as noise_lib
from part_tf.attacks.losses import cross_entropy

InitFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
ModelFn = Callable[[tf.Tensor], tf.Tensor]


# --- init functions ---------------------------------------------------------

def uniform_init(x: tf.Tensor, eps_map: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Random start `x + U(-1, 1) * eps_map`, clipped to [0, 1]."""
  noise = noise_lib.uniform(tf.shape(x), seed=seed, minval=-1.0, maxval=1.0,
                           dtype=x.dtype)
  return tf.clip_by_value(x + noise * eps_map, 0.0, 1.0)


def no_init(x: tf.Tensor, eps_map: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Deterministic start at the clean input."""
  del eps_map, seed
  return tf.identity(x)


def gaussian_init(scale: float) -> InitFn:
  """Start `x + scale * N(0, 1)` (TRADES uses scale 0.001), clipped to [0, 1]."""
  def init(x, eps_map, seed):
    del eps_map
    noise = noise_lib.normal(tf.shape(x), seed=seed, dtype=x.dtype)
    return tf.clip_by_value(x + scale * noise, 0.0, 1.0)
  return init


# --- update and projection --------------------------------------------------

def sign_step(x_adv: tf.Tensor, grad: tf.Tensor, step_size) -> tf.Tensor:
  """One signed-gradient ascent step (the L-inf steepest ascent direction)."""
  return x_adv + step_size * tf.sign(grad)


def project_linf(x_adv: tf.Tensor, x: tf.Tensor, eps_map: tf.Tensor) -> tf.Tensor:
  """Element-wise projection onto `|x_adv - x| <= eps_map`, then onto [0, 1]."""
  delta = tf.clip_by_value(x_adv - x, -eps_map, eps_map)
  return tf.clip_by_value(x + delta, 0.0, 1.0)


# --- the attack -------------------------------------------------------------

def pgd(model_fn: ModelFn,
        x: tf.Tensor,
        y: tf.Tensor,
        eps_map: tf.Tensor,
        step_size,
        num_steps: int,
        loss_fn: LossFn = cross_entropy,
        init_fn: InitFn = uniform_init,
        seed=(0, 0)) -> tf.Tensor:
  """Projected gradient ascent of `loss_fn` inside an element-wise L-inf budget.

  Args:
    model_fn: maps a batch of images in [0, 1] to logits. Call the model in
      inference mode (`training=False`) so crafting does not touch BatchNorm
      statistics.
    x: clean images, float, values in [0, 1], shape [B, H, W, C].
    y: labels, or any per-example target `loss_fn` understands.
    eps_map: the budget of every element, broadcastable to `x` (a scalar gives
      the classic uniform budget).
    step_size: size of each signed step (scalar or broadcastable tensor).
    num_steps: number of steps (a Python int; 0 returns the start point).
    loss_fn: `(logits, y) -> per-example loss` to maximise.
    init_fn: start-point function, see `uniform_init`, `no_init`.
    seed: stateless seed, shape [2].

  Returns:
    Adversarial images `x_adv` with `|x_adv - x| <= eps_map` and values in
    [0, 1]; no gradient flows back through them.

  Example:
    >>> x_adv = pgd(lambda z: model(z, training=False), x, y,
    ...             eps_map=tf.fill(tf.shape(x), 8 / 255), step_size=2 / 255,
    ...             num_steps=10)
  """
  x = tf.stop_gradient(tf.convert_to_tensor(x))
  eps_map = tf.broadcast_to(tf.cast(eps_map, x.dtype), tf.shape(x))
  step_size = tf.cast(step_size, x.dtype)
  x_adv = project_linf(init_fn(x, eps_map, tf.convert_to_tensor(seed)), x,
                       eps_map)

  def body(i, x_adv):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x_adv)
      loss = tf.reduce_sum(loss_fn(model_fn(x_adv), y))
    grad = tape.gradient(loss, x_adv)
    x_adv = project_linf(sign_step(x_adv, grad, step_size), x, eps_map)
    return i + 1, tf.stop_gradient(x_adv)

  _, x_adv = tf.while_loop(lambda i, _: i < num_steps, body,
                           (tf.constant(0), x_adv),
                           maximum_iterations=num_steps)
  return x_adv
