"""FAB (L-inf) of Croce & Hein, ICML 2020, batched and in pure TensorFlow.

FAB ("fast adaptive boundary") is a minimum-norm attack: from the clean
point it repeatedly linearises the decision boundary between the true class
and a target class, projects both the current iterate and the clean point
onto that hyperplane (inside the image box, `project_to_hyperplane`), and
steps to a convex combination of the two projections, extrapolated by `eta`.
Whenever the iterate is misclassified it keeps it if it is the smallest
perturbation so far and steps back towards the clean point by `beta`. The
budget is used only at the end: an example is fooled if the smallest
misclassified point found lies inside the budget.

`fab(targeted=True)` is FAB-T, the version in AutoAttack "standard": one run
per target class, the targets being the top `num_targets` wrong classes of
the clean logits. `targeted=False` is the untargeted FAB of AutoAttack
"plus" (it linearises every class at each step: `num_classes` gradients).

Everything follows AutoAttack's `fab_base.py` (alpha_max 0.1, eta 1.05,
beta 0.9, 100 iterations, random starts of radius eps / 2 from the second
restart on, "success" = misclassified), with two generalisations:

* The budget may be a map (PART's pixel-reweighted budgets): FAB then runs
  in the scaled coordinates `u = (x' - x) / eps`, where the budget is the unit
  L-inf ball, so it minimises `max_i |x'_i - x_i| / eps_i`. With a scalar
  budget this is exactly the reference FAB, scaled by `1 / eps`.
* The projection finds the hyperplane's crossing by sorting the breakpoints
  and counting (`project_to_hyperplane`) rather than by the reference's
  bisection over the sorted indices: the same minimiser, no data-dependent
  loop, and any box `[lo, hi]` (the scaled coordinates' box is not [0, 1]).

An example already fooled inside the budget is not attacked by later targets
or restarts (as in the reference), so the cost falls as robustness falls.
"""

from typing import Callable, Sequence

import tensorflow as tf

from part_tf.attacks import noise as noise_lib

ModelFn = Callable[[tf.Tensor], tf.Tensor]

# AutoAttack's FAB defaults (fab_base.py).
ALPHA_MAX = 0.1
ETA = 1.05
BETA = 0.9
_NOT_FOUND = float("inf")


# --- the projection -----------------------------------------------------------

def project_to_hyperplane(t: tf.Tensor, w: tf.Tensor, b: tf.Tensor,
                          lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
  """Row-wise smallest L-inf step onto a hyperplane inside a box.

  For each row solves `min ||d||_inf  s.t.  w . (t + d) = b,
  lo <= t + d <= hi`. When the box does not reach the hyperplane, `d` is the
  box corner that moves `w . (t + d)` furthest towards `b` (as in
  AutoAttack's `projection_linf`). Coordinates with `w_i = 0` do not move.

  With a step of radius `lam`, coordinate `i` moves by `min(lam, p_i)` towards
  its box face (`p_i` is its room), so the change of `w . z` is the increasing
  piecewise-linear `G(lam) = sum_i |w_i| min(lam, p_i)`: sorting `p` gives `G`
  at every breakpoint, and the crossing lies in the first segment where `G`
  reaches the required change.

  Args:
    t: points [N, D] (inside the box).
    w: hyperplane normals [N, D].
    b: offsets [N].
    lo, hi: the box, broadcastable to [N, D], with `lo <= t <= hi`.

  Returns:
    The steps `d`, [N, D].
  """
  lo = tf.broadcast_to(tf.cast(lo, t.dtype), tf.shape(t))
  hi = tf.broadcast_to(tf.cast(hi, t.dtype), tf.shape(t))
  gap = tf.reduce_sum(w * t, axis=1) - b            # w.t - b
  # Orient every row so that the step has to lower w.z by `need` >= 0.
  w = tf.where((gap >= 0)[:, None], w, -w)
  need = tf.abs(gap)
  # Full move of each coordinate towards the face that lowers w.z.
  full = tf.where(w < 0, hi - t, tf.where(w > 0, lo - t, tf.zeros_like(t)))
  room = tf.abs(full)
  weight = tf.abs(w)
  order = tf.argsort(room, axis=1, stable=True)     # ascending breakpoints
  room_s = tf.gather(room, order, batch_dims=1)
  weight_s = tf.gather(weight, order, batch_dims=1)
  saturated = tf.cumsum(weight_s * room_s, axis=1)  # sum_{j<=k} |w_j| p_j
  # Weight of the coordinates from k on / after k, summed from the end (not
  # total - prefix: that loses the small tail in float32).
  free_from = tf.cumsum(weight_s, axis=1, reverse=True)
  free_after = tf.cumsum(weight_s, axis=1, reverse=True, exclusive=True)
  at_break = saturated + room_s * free_after          # G(p_(k))
  # Segments below the need; k = D means the box cannot reach the plane.
  k = tf.reduce_sum(tf.cast(at_break < need[:, None], tf.int32), axis=1)
  dim = tf.shape(t)[1]
  zero = tf.zeros_like(need)
  saturated_prev = tf.where(
      k > 0, tf.gather(saturated, tf.maximum(k - 1, 0)[:, None],
                       batch_dims=1)[:, 0], zero)
  free = tf.gather(free_from, tf.minimum(k, dim - 1)[:, None],
                   batch_dims=1)[:, 0]
  lam = tf.math.divide_no_nan(need - saturated_prev, free)
  lam = tf.where(k >= dim, tf.fill(tf.shape(need), tf.constant(
      _NOT_FOUND, t.dtype)), tf.maximum(lam, zero))
  return tf.clip_by_value(full, -lam[:, None], lam[:, None])


# --- one run ------------------------------------------------------------------

def _boundary(model_fn, point, eps, y, target):
  """f = z_target - z_y at `point` and its gradient w.r.t. the scaled
  coordinates, [B, D] (one backward pass: the examples are independent)."""
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(point)
    logits = tf.cast(model_fn(point), tf.float32)
    f = (tf.gather(logits, target, batch_dims=1)
         - tf.gather(logits, y, batch_dims=1))
    total = tf.reduce_sum(f)
  grad = tape.gradient(total, point) * eps
  return f, tf.reshape(grad, [tf.shape(point)[0], -1])


def _linearisation(model_fn, x, eps, u, y, target, num_classes):
  """The boundary to cross at `x + eps * u`: (f, grad of f w.r.t. u [B, D]).

  Targeted: f = z_target - z_y. Untargeted: of the classes k != y, the one
  with the smallest linearised distance |f_k| / ||grad f_k||_1 (reference),
  one class at a time (a backward pass each, as the reference's Jacobian;
  memory stays that of one batch however many classes there are).
  """
  point = x + eps * tf.reshape(u, tf.shape(x))
  if target is not None:
    return _boundary(model_fn, point, eps, y, target)
  batch = tf.shape(x)[0]

  def body(k, best_dist, best_f, best_w):
    f, w = _boundary(model_fn, point, eps, y, tf.fill([batch], k))
    dist = tf.abs(f) / (1e-12 + tf.reduce_sum(tf.abs(w), axis=1))
    better = (dist < best_dist) & tf.not_equal(y, k)
    return (k + 1, tf.where(better, dist, best_dist),
            tf.where(better, f, best_f), tf.where(better[:, None], w, best_w))

  zeros = tf.zeros([batch], tf.float32)
  _, _, f, w = tf.while_loop(
      lambda k, *_: k < num_classes, body,
      (tf.constant(0), tf.fill([batch], float("inf")), zeros,
       tf.zeros_like(tf.reshape(x, [batch, -1]))),
      maximum_iterations=num_classes)
  return f, w


def _run(model_fn, x, y, eps, target, start, num_steps, num_classes,
         alpha_max, eta, beta):
  """One FAB run from `start` (scaled coordinates, [B, D]).

  Returns:
    (best u [B, D], its L-inf norm [B]; inf where nothing was found).
  """
  batch = tf.shape(x)[0]
  lo = tf.reshape(tf.math.divide_no_nan(-x, eps), [batch, -1])
  hi = tf.reshape(tf.math.divide_no_nan(1.0 - x, eps), [batch, -1])
  zeros = tf.zeros_like(start)

  def norm(v):
    return tf.reduce_max(tf.abs(v), axis=1)

  def body(i, u, best, best_norm):
    f, w = _linearisation(model_fn, x, eps, u, y, target, num_classes)
    # The hyperplane f(u) + w.(z - u) = 0, i.e. w.z = w.u - f.
    b = tf.reduce_sum(w * u, axis=1) - f
    d = project_to_hyperplane(tf.concat([u, zeros], 0), tf.concat([w, w], 0),
                              tf.concat([b, b], 0), tf.concat([lo, lo], 0),
                              tf.concat([hi, hi], 0))
    d_now, d_clean = d[:batch], d[batch:]
    a_now = tf.maximum(norm(d_now), 1e-8)
    a_clean = tf.maximum(norm(d_clean), 1e-8)
    alpha = tf.minimum(a_now / (a_now + a_clean), alpha_max)[:, None]
    u = tf.clip_by_value((u + eta * d_now) * (1.0 - alpha)
                         + eta * d_clean * alpha, lo, hi)
    logits = model_fn(x + eps * tf.reshape(u, tf.shape(x)))
    wrong = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
    size = norm(u)
    better = wrong & (size < best_norm)
    best = tf.where(better[:, None], u, best)
    best_norm = tf.where(better, size, best_norm)
    u = tf.where(wrong[:, None], beta * u, u)       # back towards the clean x
    return i + 1, tf.stop_gradient(u), best, best_norm

  _, _, best, best_norm = tf.while_loop(
      lambda i, *_: i < num_steps, body,
      (tf.constant(0), start, zeros, tf.fill([batch], _NOT_FOUND)),
      maximum_iterations=num_steps)
  return best, best_norm


# --- the attack ---------------------------------------------------------------

def fab(model_fn: ModelFn,
        x: tf.Tensor,
        y: tf.Tensor,
        eps,
        num_steps: int = 100,
        targeted: bool = True,
        num_targets: int = 9,
        num_restarts: int = 1,
        alpha_max: float = ALPHA_MAX,
        eta: float = ETA,
        beta: float = BETA,
        seed: Sequence[int] | tf.Tensor = (0, 0),
        return_norms: bool = False):
  """FAB-T (or untargeted FAB), L-inf, as in AutoAttack.

  Args:
    model_fn: images in [0, 1] -> logits (call the model with
      `training=False`: the per-example gradients come from one backward
      pass over the batch).
    x: clean images in [0, 1], [B, ...].
    y: integer labels [B].
    eps: scalar budget or element-wise budget map broadcastable to `x`.
    num_steps: iterations per run (100 in AutoAttack).
    targeted: FAB-T (one run per target class) or untargeted FAB.
    num_targets: target classes of FAB-T, the top wrong classes of the clean
      logits (9 in AutoAttack; capped at num_classes - 1).
    num_restarts: runs per target (untargeted: runs); the first starts at
      `x`, the others at random points of norm eps / 2 (1 in AutoAttack
      "standard", 5 for untargeted FAB in "plus").
    alpha_max, eta, beta: FAB's step parameters (0.1, 1.05, 0.9).
    seed: stateless seed, shape [2], of the random starts.
    return_norms: also return, per example, the L-inf norm of the smallest
      misclassified perturbation found (inf where none was found, 0 where
      the clean example is misclassified; for an example fooled inside the
      budget, that of the first run that did).

  Returns:
    `x_adv` (and the norms [B] with `return_norms`): per example the smallest
    misclassified point found if it lies within the budget, else `x`;
    `|x_adv - x| <= eps` and values in [0, 1].
  """
  x = tf.stop_gradient(tf.convert_to_tensor(x))
  if not x.dtype.is_floating:
    raise ValueError(f"x must be float in [0, 1], got {x.dtype}.")
  dtype = x.dtype
  x = tf.cast(x, tf.float32)  # FAB's state and norms are float32
  if num_steps < 0 or num_restarts < 1 or num_targets < 1:
    raise ValueError("num_steps must be >= 0, num_restarts and num_targets "
                     ">= 1.")
  y = tf.cast(tf.convert_to_tensor(y), tf.int32)
  eps = tf.broadcast_to(tf.cast(eps, x.dtype), tf.shape(x))
  clean_logits = tf.cast(model_fn(x), tf.float32)
  num_classes = clean_logits.shape[-1]
  if num_classes is None or num_classes < 2:
    raise ValueError("fab needs a static number of classes (at least 2).")
  batch = tf.shape(x)[0]
  flat = tf.reshape(x, [batch, -1])
  # Only the clean-correct examples are attacked (the others keep x).
  pending = tf.equal(tf.argmax(clean_logits, axis=-1, output_type=tf.int32), y)
  if targeted:
    num_targets = min(num_targets, num_classes - 1)
    order = tf.argsort(clean_logits, axis=-1, direction="DESCENDING",
                       stable=True)
  num_runs = num_restarts * (num_targets if targeted else 1)

  def attack(rows, target, noise):
    xs, ys, es = (tf.gather(v, rows) for v in (x, y, eps))
    lo = tf.reshape(tf.math.divide_no_nan(-xs, es), [tf.size(rows), -1])
    hi = tf.reshape(tf.math.divide_no_nan(1.0 - xs, es), [tf.size(rows), -1])
    start = tf.clip_by_value(tf.gather(noise, rows), lo, hi)
    u, _ = _run(model_fn, xs, ys, es, None if target is None
                else tf.gather(target, rows), start, num_steps, num_classes,
                alpha_max, eta, beta)
    found = tf.clip_by_value(xs + es * tf.reshape(u, tf.shape(xs)), 0.0, 1.0)
    size = tf.reduce_max(tf.abs(tf.reshape(found - xs, [tf.size(rows), -1])),
                         axis=1)
    wrong = tf.not_equal(
        tf.argmax(model_fn(found), axis=-1, output_type=tf.int32), ys)
    size = tf.where(wrong, size, _NOT_FOUND)
    inside = wrong & tf.reduce_all(
        tf.reshape(tf.abs(found - xs) <= es, [tf.size(rows), -1]), axis=1)
    return found, size, inside

  def start_noise(index):
    # Uniform noise rescaled to norm 1/2 (eps / 2 in pixels), drawn for the
    # whole batch so that an example's start does not depend on which
    # examples are still pending.
    noise = tf.reshape(noise_lib.uniform(
        tf.shape(x), seed=noise_lib.run_seed(seed, index), minval=-1.0,
        maxval=1.0, dtype=x.dtype), [batch, -1])
    return 0.5 * noise / tf.reduce_max(tf.abs(noise), axis=1, keepdims=True)

  def one_run(index, x_adv, norms, pending):
    # Run `index`: target column 1 + index // num_restarts of `order`
    # (FAB-T), restart index % num_restarts (the first at x).
    target = (tf.gather(order, 1 + index // num_restarts, axis=1)
              if targeted else None)
    noise = tf.cond(index % num_restarts > 0, lambda: start_noise(index),
                    lambda: tf.zeros_like(flat))
    rows = tf.where(pending)[:, 0]

    def skip():
      n = tf.size(rows)
      return (tf.zeros(tf.concat([[n], tf.shape(x)[1:]], 0), x.dtype),
              tf.zeros([n], tf.float32), tf.zeros([n], tf.bool))

    # TF's convolutions fail on an empty batch.
    found, size, inside = tf.cond(tf.size(rows) == 0, skip,
                                  lambda: attack(rows, target, noise))
    at = rows[:, None]
    old = tf.gather(norms, rows)
    norms = tf.tensor_scatter_nd_update(norms, at, tf.minimum(old, size))
    x_adv = tf.tensor_scatter_nd_update(
        x_adv, at, tf.where(tf.reshape(inside, [-1] + [1] * (x.shape.rank - 1)),
                            found, tf.gather(x_adv, rows)))
    pending = tf.tensor_scatter_nd_update(pending, at, ~inside)
    return index + 1, x_adv, norms, pending

  # A misclassified clean example needs no perturbation. The runs go one
  # after the other in a tf.while_loop: the graph holds one run whatever
  # their number (a Python loop would unroll one copy of FAB per run).
  initial = (tf.constant(0), x, tf.where(pending, _NOT_FOUND, 0.0), pending)
  _, x_adv, norms, _ = tf.while_loop(
      lambda index, *_: index < num_runs, one_run, initial,
      maximum_iterations=num_runs, parallel_iterations=1)
  x_adv = tf.stop_gradient(tf.cast(x_adv, dtype))
  return (x_adv, norms) if return_norms else x_adv
