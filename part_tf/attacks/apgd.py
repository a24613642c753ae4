"""Auto-PGD (APGD, L-inf) of Croce & Hein 2020, batched and in pure TensorFlow.

`apgd` ascends cross-entropy ("ce") or the difference-of-logits-ratio ("dlr")
loss with momentum and a per-example step size that is halved at checkpoints
when progress stalls (restarting from the best point found so far), as in
AutoAttack's APGD. `apgd_targeted` is APGD-T: APGD on the targeted DLR loss
against each of the top wrong classes of the clean logits in turn.

The budget `eps` is a scalar or an element-wise map like `x`; the projection
is `project_linf` of `pgd.py`, and the initial step size is `2 * eps`
(element-wise), so a pixel-reweighted budget works through the same code.
All per-example state lives in tensors inside one `tf.while_loop`: the
functions run eagerly and inside `tf.function` (one trace per input shape).
The checkpoint schedule depends only on the Python int `num_steps`.
"""

from typing import Callable, Sequence

import tensorflow as tf

from part_tf.attacks import noise as noise_lib
from part_tf.attacks.losses import cross_entropy
from part_tf.attacks.pgd import project_linf

ModelFn = Callable[[tf.Tensor], tf.Tensor]

_MOMENTUM = 0.75


# --- losses -----------------------------------------------------------------

def dlr_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
  """Untargeted DLR: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12).

  Needs at least 3 classes; z_pi1 >= z_pi2 >= ... are the sorted logits.
  """
  logits = tf.cast(logits, tf.float32)
  y = tf.cast(y, tf.int32)
  z_sorted = tf.sort(logits, axis=-1, direction="DESCENDING")
  z_y = tf.gather(logits, y, batch_dims=1)
  others = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0,
                    tf.constant(-float("inf"), logits.dtype), logits)
  z_other = tf.reduce_max(others, axis=-1)
  return -(z_y - z_other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def targeted_dlr_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor
                      ) -> tf.Tensor:
  """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).

  Needs at least 4 classes.
  """
  logits = tf.cast(logits, tf.float32)
  z_sorted = tf.sort(logits, axis=-1, direction="DESCENDING")
  z_y = tf.gather(logits, tf.cast(y, tf.int32), batch_dims=1)
  z_t = tf.gather(logits, tf.cast(target, tf.int32), batch_dims=1)
  return -(z_y - z_t) / (
      z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


def _loss_fn(loss, target):
  if callable(loss):
    return loss
  if loss == "ce":
    if target is not None:
      raise ValueError("A target is only supported with loss='dlr'.")
    return cross_entropy
  if loss == "dlr":
    if target is None:
      return dlr_loss
    return lambda logits, y: targeted_dlr_loss(logits, y, target)
  raise ValueError(f"Unknown APGD loss {loss!r}; use 'ce' or 'dlr'.")


# --- checkpoint schedule ----------------------------------------------------

def checkpoint_schedule(num_steps: int) -> tuple[list[bool], list[int]]:
  """Which steps end a checkpoint interval, and that interval's length.

  AutoAttack's integer schedule: the first interval has
  `max(int(0.22 N), 1)` steps, each next one `0.03 N` fewer, down to at
  least `0.06 N` (i.e. p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)).

  Returns:
    `(is_checkpoint, length)`, two lists of `num_steps` entries; step `i`
    (0-based) is a checkpoint when `is_checkpoint[i]`, closing an interval of
    `length[i]` steps (0 elsewhere).
  """
  first = max(int(0.22 * num_steps), 1)
  decrease = max(int(0.03 * num_steps), 1)
  minimum = max(int(0.06 * num_steps), 1)
  is_ckpt, length = [False] * num_steps, [0] * num_steps
  k, since = first, 0
  for i in range(num_steps):
    since += 1
    if since == k:
      is_ckpt[i], length[i] = True, k
      k, since = max(k - decrease, minimum), 0
  return is_ckpt, length


# --- the attack ---------------------------------------------------------------

def _per_example(v: tf.Tensor, rank: int) -> tf.Tensor:
  """Reshapes a [B] tensor to [B, 1, ..., 1] for broadcasting against x."""
  return tf.reshape(v, [-1] + [1] * (rank - 1))


def _apgd_once(model_fn, x, y, eps_map, num_steps, loss_fn, rho, seed,
               random_start, record=False):
  """One APGD run.

  Returns:
    (x_adv, found_adversarial [B], best_loss [B], trace): `trace` is None,
    or with `record` a dict of the starting point's loss ("initial" [B]),
    the loss of every step ("losses" [num_steps, B]) and whether the step
    size was halved at it ("halved" [num_steps, B]), for tests.
  """
  rank = x.shape.rank
  if random_start:
    noise = noise_lib.uniform(tf.shape(x), seed=seed, minval=-1.0,
                             maxval=1.0, dtype=x.dtype)
    x_adv = project_linf(x + noise * eps_map, x, eps_map)
  else:
    x_adv = tf.identity(x)

  def evaluate(z):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(z)
      logits = model_fn(z)
      loss = tf.cast(loss_fn(logits, y), tf.float32)
      total = tf.reduce_sum(loss)
    grad = tf.stop_gradient(tape.gradient(total, z))
    wrong = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                         tf.cast(y, tf.int32))
    return tf.stop_gradient(loss), grad, wrong

  loss, grad, wrong = evaluate(x_adv)
  batch = tf.shape(x)[0]
  is_ckpt_list, length_list = checkpoint_schedule(num_steps)
  is_ckpt_table = tf.constant(is_ckpt_list + [False], tf.bool)
  length_table = tf.constant(length_list + [0], tf.float32)

  state = dict(
      i=tf.constant(0),
      x_adv=x_adv,
      x_prev=x_adv,
      grad=grad,
      # AutoAttack counts the increases of its record of step losses, which
      # starts as zeros: the first step's loss is compared with 0 (with the
      # loss itself when there is only one step), not with the starting
      # point's loss.
      loss_prev=(tf.zeros_like(loss) if num_steps > 1
                 else tf.fill(tf.shape(loss), float("inf"))),
      scale=tf.ones([batch], tf.float32),          # step = 2 eps * scale
      increases=tf.zeros([batch], tf.float32),     # since last checkpoint
      x_best=x_adv, grad_best=grad, loss_best=loss,
      loss_best_last_check=loss,
      # As in AutoAttack: no "no improvement" halving at the first
      # checkpoint.
      reduced_last_check=tf.ones([batch], tf.bool),
      x_found=x_adv, found=wrong)
  if record:
    state.update(losses=tf.zeros([num_steps, batch], tf.float32),
                 halved=tf.zeros([num_steps, batch], tf.bool))

  def body(s):
    i = s["i"]
    x_k = s["x_adv"]
    step = 2.0 * eps_map * tf.cast(_per_example(s["scale"], rank), x.dtype)
    z = project_linf(x_k + step * tf.sign(s["grad"]), x, eps_map)
    alpha = tf.where(i > 0, _MOMENTUM, 1.0)
    alpha = tf.cast(alpha, x.dtype)
    x_new = project_linf(
        x_k + alpha * (z - x_k) + (1.0 - alpha) * (x_k - s["x_prev"]),
        x, eps_map)
    loss, grad, wrong = evaluate(x_new)

    x_found = tf.where(_per_example(wrong, rank), x_new, s["x_found"])
    found = s["found"] | wrong
    increases = s["increases"] + tf.cast(loss > s["loss_prev"], tf.float32)
    better = loss > s["loss_best"]
    better_b = _per_example(better, rank)
    x_best = tf.where(better_b, x_new, s["x_best"])
    grad_best = tf.where(better_b, grad, s["grad_best"])
    loss_best = tf.where(better, loss, s["loss_best"])

    # Checkpoint: halve the step where progress stalled, restart from best.
    is_ckpt = is_ckpt_table[i]
    length = length_table[i]
    oscillating = increases <= rho * length
    no_improvement = (~s["reduced_last_check"] &
                      (s["loss_best_last_check"] >= loss_best))
    halve = is_ckpt & (oscillating | no_improvement)
    halve_b = _per_example(halve, rank)
    recorded = {}
    if record:
      recorded = dict(
          losses=tf.tensor_scatter_nd_update(s["losses"], [[i]], [loss]),
          halved=tf.tensor_scatter_nd_update(s["halved"], [[i]], [halve]))
    return (dict(
        **recorded,
        i=i + 1,
        x_adv=tf.where(halve_b, x_best, x_new),
        x_prev=x_k,
        grad=tf.where(halve_b, grad_best, grad),
        loss_prev=loss,
        scale=tf.where(halve, 0.5 * s["scale"], s["scale"]),
        increases=tf.where(is_ckpt, tf.zeros_like(increases), increases),
        x_best=x_best, grad_best=grad_best, loss_best=loss_best,
        loss_best_last_check=tf.where(is_ckpt, loss_best,
                                      s["loss_best_last_check"]),
        reduced_last_check=tf.where(is_ckpt, halve, s["reduced_last_check"]),
        x_found=x_found, found=found),)

  s = tf.while_loop(lambda s: s["i"] < num_steps, body, (state,),
                    maximum_iterations=num_steps)[0]
  x_out = tf.where(_per_example(s["found"], rank), s["x_found"], s["x_best"])
  trace = (dict(initial=loss, losses=s["losses"], halved=s["halved"])
           if record else None)
  return tf.stop_gradient(x_out), s["found"], s["loss_best"], trace


def apgd(model_fn: ModelFn,
         x: tf.Tensor,
         y: tf.Tensor,
         eps,
         num_steps: int = 100,
         loss="ce",
         target: tf.Tensor | None = None,
         rho: float = 0.75,
         seed: Sequence[int] | tf.Tensor = (0, 0),
         random_start: bool = True,
         num_restarts: int = 1) -> tf.Tensor:
  """APGD (L-inf) of Croce & Hein 2020, as in AutoAttack.

  Args:
    model_fn: images in [0, 1] -> logits (call the model with
      `training=False`).
    x: clean images in [0, 1], shape [B, ...].
    y: integer labels [B].
    eps: scalar budget or element-wise budget map broadcastable to `x`.
    num_steps: iterations per restart (Python int).
    loss: "ce", "dlr", or a callable `(logits, y) -> [B]` loss to ascend.
    target: optional target classes [B] (only with loss="dlr": targeted DLR,
      the loss of APGD-T). Success is still "misclassified" (argmax != y).
    rho: the oscillation threshold of the checkpoint test: at a checkpoint
      closing an interval of k steps, the step size halves where the loss
      rose in at most rho * k of them (or where it did not halve at the last
      checkpoint and the best loss has not improved since), as in AutoAttack.
    seed: stateless seed, shape [2], of the random start.
    random_start: start uniformly inside the budget (else at `x`).
    num_restarts: independent runs (a Python loop); an example keeps the
      adversarial point of the first restart that found one, else the
      highest-loss point over restarts.

  Returns:
    `x_adv` with `|x_adv - x| <= eps` and values in [0, 1], per example the
    last misclassified iterate if any was found, else the highest-loss point.
  """
  x = tf.stop_gradient(tf.convert_to_tensor(x))
  if not x.dtype.is_floating:
    raise ValueError(f"x must be float in [0, 1], got {x.dtype}.")
  eps_map = tf.broadcast_to(tf.cast(eps, x.dtype), tf.shape(x))
  y = tf.convert_to_tensor(y)
  loss_fn = _loss_fn(loss, target)
  if num_steps < 0 or num_restarts < 1:
    raise ValueError("num_steps must be >= 0 and num_restarts >= 1.")
  rank = x.shape.rank
  x_out = found = best = None
  for r in range(num_restarts):
    x_r, found_r, best_r, _ = _apgd_once(
        model_fn, x, y, eps_map, num_steps, loss_fn, rho,
        noise_lib.run_seed(seed, r), random_start)
    if x_out is None:
      x_out, found, best = x_r, found_r, best_r
      continue
    take = (~found) & (found_r | (best_r > best))
    x_out = tf.where(_per_example(take, rank), x_r, x_out)
    best = tf.where(take, best_r, best)
    found = found | found_r
  return x_out


def apgd_targeted(model_fn: ModelFn,
                  x: tf.Tensor,
                  y: tf.Tensor,
                  eps,
                  num_steps: int = 100,
                  num_targets: int = 9,
                  rho: float = 0.75,
                  seed: Sequence[int] | tf.Tensor = (0, 0),
                  random_start: bool = True,
                  tile_targets: bool = False) -> tf.Tensor:
  """APGD-T: targeted-DLR APGD against each of the top wrong classes.

  The targets are the `num_targets` highest clean logits other than `y`
  (capped at num_classes - 1), attacked in turn (a Python loop over the
  targets, or one run over the batch tiled `num_targets` times with
  `tile_targets=True`: faster, `num_targets` times the memory); an example
  keeps the first adversarial point found and is robust only if every target
  fails (then the last run's highest-loss point is returned).

  Args:
    model_fn, x, y, eps, num_steps, rho, random_start: as for `apgd`.
    num_targets: how many target classes (9 for 10 classes in AutoAttack).
    seed: stateless seed, shape [2]; target `j` uses a seed derived from it.
    tile_targets: attack all targets in one batched run (see above).

  Returns:
    `x_adv` with `|x_adv - x| <= eps` and values in [0, 1].
  """
  x = tf.stop_gradient(tf.convert_to_tensor(x))
  y = tf.cast(tf.convert_to_tensor(y), tf.int32)
  logits = tf.cast(model_fn(x), tf.float32)
  num_classes = logits.shape[-1]
  if num_classes is None:
    raise ValueError("apgd_targeted needs a static number of classes.")
  if num_classes < 4:
    raise ValueError("Targeted DLR needs at least 4 classes.")
  num_targets = min(num_targets, num_classes - 1)
  others = tf.where(tf.one_hot(y, num_classes) > 0,
                    tf.constant(-float("inf"), tf.float32), logits)
  _, targets = tf.math.top_k(others, k=num_targets)
  rank = x.shape.rank
  if tile_targets:
    # One run over num_targets copies of the batch, target-major.
    tiled = lambda t: tf.concat([t] * num_targets, axis=0)
    eps_map = tf.broadcast_to(tf.cast(eps, x.dtype), tf.shape(x))
    y_all = tiled(y)
    x_all = apgd(model_fn, tiled(x), y_all, tiled(eps_map),
                 num_steps=num_steps, loss="dlr",
                 target=tf.reshape(tf.transpose(targets), [-1]), rho=rho,
                 seed=noise_lib.run_seed(seed, 1000),
                 random_start=random_start)
    wrong = tf.not_equal(
        tf.argmax(model_fn(x_all), axis=-1, output_type=tf.int32), y_all)
    batch = tf.shape(x)[0]
    wrong = tf.reshape(wrong, [num_targets, batch])
    # First successful target per example, else the last target's point.
    first = tf.argmax(tf.cast(wrong, tf.int32), axis=0, output_type=tf.int32)
    pick = tf.where(tf.reduce_any(wrong, axis=0), first, num_targets - 1)
    return tf.gather(x_all, pick * batch + tf.range(batch))
  x_out = found = None
  for j in range(num_targets):
    x_j = apgd(model_fn, x, y, eps, num_steps=num_steps, loss="dlr",
               target=targets[:, j], rho=rho,
               seed=noise_lib.run_seed(seed, 1000 + j),
               random_start=random_start)
    wrong = tf.not_equal(
        tf.argmax(model_fn(x_j), axis=-1, output_type=tf.int32), y)
    if x_out is None:
      x_out, found = x_j, wrong
    else:
      x_out = tf.where(_per_example(found, rank), x_out, x_j)
      found = found | wrong
  return x_out
