"""MMA-style crafting: targeted margin PGD against the top-k wrong classes.

For each example, k targeted runs (one per most likely wrong class of the
clean input) ascend the margin z_target - z_true inside the same element-wise
budget; the run with the largest margin violation (max_{j != y} z_j - z_y) is
kept. The k runs go through one batched PGD on the tiled batch.
"""

import tensorflow as tf

from part_tf.attacks import losses
from part_tf.attacks.pgd import pgd
from part_tf.attacks.pgd import uniform_init


def mma(model_fn, x, y, eps_map, step_size, num_steps: int, k: int = 3,
        init_fn=uniform_init, seed=(0, 0)) -> tf.Tensor:
  """Worst of `k` targeted margin PGD runs, per example.

  Args:
    model_fn: images in [0, 1] -> logits (inference mode).
    x: clean images [B, H, W, C].
    y: integer labels [B].
    eps_map: element-wise budget, broadcastable to `x`.
    step_size: PGD step size.
    num_steps: PGD steps of each run.
    k: number of target classes (the k largest wrong logits of the clean
      input); at most num_classes - 1.
    init_fn: start-point function of each run.
    seed: stateless seed, shape [2].

  Returns:
    x_adv with `|x_adv - x| <= eps_map`, values in [0, 1].
  """
  x = tf.convert_to_tensor(x)
  y = tf.cast(y, tf.int32)
  logits = model_fn(x)
  num_classes = logits.shape[-1]
  if num_classes is not None and k > num_classes - 1:
    raise ValueError(f"mma needs k <= num_classes - 1, got k={k} with "
                     f"{num_classes} classes")
  wrong_logits = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0,
                          tf.constant(-float("inf"), logits.dtype), logits)
  targets = tf.math.top_k(wrong_logits, k=k).indices            # [B, k]
  batch = tf.shape(x)[0]
  # Run r of example b sits at r * B + b.
  tiled_targets = tf.reshape(tf.transpose(targets), [-1])       # [k * B]
  tiled_y = tf.tile(y, [k])
  tiled_x = tf.tile(x, [k, 1, 1, 1])
  tiled_eps = tf.tile(tf.broadcast_to(tf.cast(eps_map, x.dtype), tf.shape(x)),
                      [k, 1, 1, 1])
  runs = pgd(model_fn, tiled_x, tf.stack([tiled_y, tiled_targets], axis=1),
             tiled_eps, step_size, num_steps,
             loss_fn=losses.targeted_margin, init_fn=init_fn, seed=seed)
  violation = tf.reshape(losses.margin_violation(model_fn(runs), tiled_y),
                         [k, batch])
  best = tf.argmax(violation, axis=0, output_type=tf.int32)     # [B]
  runs = tf.reshape(runs, tf.concat([[k, batch], tf.shape(x)[1:]], axis=0))
  return tf.gather(tf.transpose(runs, [1, 0, 2, 3, 4]), best, batch_dims=1)
