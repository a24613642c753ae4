"""FAB / FAB-T: the projection against an independent numpy solver, the
minimal perturbation of linear models (known in closed form), budgets, and
strength against PGD-20 on a trained model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import attacks
from part_tf.attacks.fab import fab
from part_tf.attacks.fab import project_to_hyperplane
from part_tf.data import datasets
from part_tf.models import small_cnn


def _project_by_bisection(t, w, b, lo, hi):
  """Independent solver of min ||d||_inf s.t. w.(t+d) = b, lo <= t+d <= hi:
  bisection on the radius, one row at a time (the box corner that gets
  closest when the plane is out of reach)."""
  out = np.zeros_like(t)
  for i in range(t.shape[0]):
    gap = w[i] @ t[i] - b[i]
    wi = w[i] if gap >= 0 else -w[i]
    full = np.where(wi < 0, hi[i] - t[i], np.where(wi > 0, lo[i] - t[i], 0.0))
    reach = lambda lam, wi=wi, full=full: np.sum(
        np.abs(wi) * np.minimum(lam, np.abs(full)))
    if reach(np.abs(full).max()) < abs(gap):
      out[i] = full
      continue
    low, high = 0.0, np.abs(full).max()
    for _ in range(200):
      mid = (low + high) / 2
      low, high = (mid, high) if reach(mid) < abs(gap) else (low, mid)
    out[i] = np.clip(full, -high, high)
  return out


def _linear(num_features=40, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(num_features, num_classes)).astype(np.float32)
  bias = rng.normal(size=num_classes).astype(np.float32)
  return weights, bias, (lambda z: tf.matmul(z, weights) + bias)


def _optimum(x, y, weights, bias, eps=None):
  """Smallest max_i |d_i| / eps_i moving x into the region of some class
  k != y, inside [0, 1]: per class, the projection onto z_k = z_y (numpy
  solver above, in the coordinates scaled by eps)."""
  eps = np.ones_like(x) if eps is None else eps
  best = np.full(len(x), np.inf)
  for k in range(weights.shape[1]):
    w = (weights[:, k][None] - weights[:, y].T) * eps   # [N, D]
    f = x @ weights[:, k] + bias[k] - np.take_along_axis(
        x @ weights + bias, y[:, None], 1)[:, 0]
    u0 = np.zeros_like(x)
    d = _project_by_bisection(u0, w, -f, -x / eps, (1 - x) / eps)
    reached = np.abs(np.sum(w * d, 1) + f) < 1e-4 * (1 + np.abs(f))
    norm = np.where(reached & (k != y), np.abs(d).max(1), np.inf)
    best = np.minimum(best, norm)
  return best


class ProjectionTest(tf.test.TestCase):

  def test_agrees_with_bisection_solver(self):
    rng = np.random.default_rng(1)
    n, d = 400, 30
    lo = -rng.uniform(0, 2, (n, d))
    hi = rng.uniform(0, 2, (n, d))
    t = rng.uniform(lo, hi)
    w = rng.normal(size=(n, d))
    w[rng.uniform(size=(n, d)) < 0.2] = 0.0
    # Offsets near and far: some planes lie outside the box.
    b = (w * t).sum(1) + rng.normal(size=n) * rng.choice([0.01, 1, 30], n)
    for box in ((0.0, 1.0), (lo, hi)):
      lo_, hi_ = (np.broadcast_to(v, t.shape) for v in box)
      t_ = np.clip(t, lo_, hi_)
      got = project_to_hyperplane(*(tf.constant(v) for v in (
          t_, w, b, lo_, hi_))).numpy()
      want = _project_by_bisection(t_, w, b, lo_, hi_)
      self.assertAllClose(got, want, atol=1e-9)
      self.assertTrue(np.all(t_ + got >= lo_ - 1e-12))
      self.assertTrue(np.all(t_ + got <= hi_ + 1e-12))
      self.assertAllEqual(got[w == 0], np.zeros(np.sum(w == 0)))
    # Both kinds of row were seen: planes reached and planes out of reach.
    reached = np.abs(((t + want) * w).sum(1) - b) < 1e-6
    self.assertGreater(reached.sum(), 50)
    self.assertGreater((~reached).sum(), 50)


  def test_float32_image_sized_rows(self):
    # CIFAR-sized rows in float32, as FAB runs them, in [0, 1] and in the
    # box of coordinates scaled by an 8/255 budget: the radius agrees with
    # the float64 solver to 1e-4 relative, also where the crossing needs
    # the few coordinates with the most room (a small free weight).
    rng = np.random.default_rng(2)
    n, d = 40, 3072
    x = rng.uniform(0, 1, (n, d))
    for lo, hi, t in ((np.zeros_like(x), np.ones_like(x), x),
                      (-x * 255 / 8, (1 - x) * 255 / 8, np.zeros_like(x))):
      w = rng.normal(size=(n, d)) * np.exp(rng.normal(size=(n, d)) * 2)
      reach = np.sum(np.abs(w) * np.where(w > 0, t - lo, hi - t), 1)
      b = (w * t).sum(1) - reach * rng.uniform(0.05, 0.99999, n)
      got = project_to_hyperplane(*(tf.constant(v, tf.float32) for v in (
          t, w, b, lo, hi))).numpy()
      want = _project_by_bisection(t, w, b, lo, hi)
      self.assertAllClose(np.abs(got).max(1), np.abs(want).max(1),
                          rtol=1e-4)


@pytest.mark.slow
class LinearModelTest(tf.test.TestCase):
  """On a linear model the linearisation is exact, and the smallest
  perturbation to another class is known: FAB must find it (up to its
  extrapolation, eta = 1.05 converging to a point ~0.5% beyond the plane)."""

  def _data(self, spread, seed=0):
    weights, bias, model_fn = _linear(seed=seed)
    rng = np.random.default_rng(seed + 10)
    x = np.clip(0.5 + spread * rng.normal(size=(64, 40)), 0, 1).astype(
        np.float32)
    y = np.argmax(x @ weights + bias, 1).astype(np.int32)
    return weights, bias, model_fn, x, y

  def _check_optimal(self, targeted, spread, eps_map=None):
    weights, bias, model_fn, x, y = self._data(spread)
    scale = np.ones_like(x) if eps_map is None else eps_map
    opt = _optimum(x.astype(np.float64), y, weights.astype(np.float64),
                   bias.astype(np.float64), scale)
    self.assertTrue(np.all(np.isfinite(opt)))
    budget = lambda factor: (factor * opt[:, None] * scale).astype(np.float32)
    # Just below the optimum nothing can be fooled: FAB returns x, and the
    # smallest perturbation it found (in units of the budget) is within 1%.
    # Compiled, as the evaluation runs it (eager FAB is slow).
    run = tf.function(lambda eps: fab(model_fn, x, y, eps, targeted=targeted,
                                      return_norms=True))
    x_adv, norms = run(budget(0.99))
    self.assertAllEqual(x_adv.numpy(), x)
    found = norms.numpy()
    if eps_map is None:
      ratio = found / opt
      self.assertTrue(np.all(ratio >= 1 - 1e-4), ratio.min())
      self.assertTrue(np.all(ratio <= 1.01), ratio.max())
    # Just above it every example is fooled, inside the budget.
    big = budget(1.01)
    x_adv = run(big)[0].numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= big))
    pred = np.argmax(x_adv @ weights + bias, 1)
    self.assertAllEqual(pred != y, np.ones(len(y), bool))

  def test_fab_t_finds_the_minimal_perturbation(self):
    self._check_optimal(targeted=True, spread=0.05)

  def test_fab_t_with_the_image_box_active(self):
    # Wider inputs: many optima push coordinates against 0 or 1.
    weights, bias, _, x, y = self._data(0.4)
    opt = _optimum(x.astype(np.float64), y, weights.astype(np.float64),
                   bias.astype(np.float64))
    # Without the box the optimum would be min_k |f_k| / ||w_k - w_y||_1.
    logits = x @ weights + bias
    with np.errstate(invalid="ignore", divide="ignore"):
      free = np.min([np.where(
          k == y, np.inf, (logits[np.arange(len(y)), y] - logits[:, k])
          / np.abs(weights[:, [k]] - weights[:, y]).sum(0))
                     for k in range(weights.shape[1])], axis=0)
    self.assertGreater(np.mean(opt > free * 1.01), 0.3)
    self._check_optimal(targeted=True, spread=0.4)

  def test_untargeted_fab_finds_the_minimal_perturbation(self):
    self._check_optimal(targeted=False, spread=0.05)

  def test_per_element_budget_is_the_unit_ball_of_the_map(self):
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.2, 1.0, (64, 40)).astype(np.float32)
    self._check_optimal(targeted=True, spread=0.05, eps_map=scale)


class GraphSizeTest(tf.test.TestCase):

  def test_the_graph_holds_one_run_whatever_the_targets_and_restarts(self):
    """The runs are a tf.while_loop, not unrolled copies of FAB: a compiled
    FAB-T of 9 targets x 2 restarts has as many ops as one of 2 x 1."""
    weights, bias, model_fn = _linear()
    x = np.random.default_rng(0).uniform(size=(8, 40)).astype(np.float32)
    y = np.argmax(x @ weights + bias, 1).astype(np.int32)

    def ops(num_targets, num_restarts):
      run = tf.function(lambda: fab(model_fn, x, y, 0.1, num_steps=3,
                                    num_targets=num_targets,
                                    num_restarts=num_restarts))
      graph = run.get_concrete_function().graph
      functions = graph.as_graph_def().library.function
      return len(graph.get_operations()) + sum(len(f.node_def)
                                               for f in functions)

    self.assertEqual(ops(9, 2), ops(2, 1))


@pytest.mark.slow
class TrainedModelTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    train, test, _ = datasets.load("mnist_offline")
    keras.utils.set_random_seed(0)
    cls.model = small_cnn((28, 28, 1), 10)
    cls.model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cls.model.fit(train.images[:3000] / 255.0, train.labels[:3000],
                  batch_size=64, epochs=2, verbose=0)
    cls.x = tf.constant(test.images[:100] / 255.0, tf.float32)
    cls.y = tf.constant(test.labels[:100], tf.int32)
    model = cls.model
    cls.model_fn = staticmethod(lambda z: model(z, training=False))
    # Compiled, as the evaluation runs it (eager FAB takes minutes here).
    cls.fab = staticmethod(tf.function(
        lambda x, y, eps, **kw: fab(cls.model_fn, x, y, eps, **kw)))

  def _robust(self, x_adv):
    return np.argmax(self.model_fn(x_adv).numpy(), 1) == self.y.numpy()

  def test_at_least_as_strong_as_pgd20(self):
    eps = 0.1
    clean = self._robust(self.x)
    self.assertGreater(clean.mean(), 0.85)
    pgd = attacks.pgd(self.model_fn, self.x, self.y, eps, eps / 4, 20)
    x_fab, norms = tf.function(lambda x, y: fab(
        self.model_fn, x, y, eps, return_norms=True))(self.x, self.y)
    robust_pgd, robust_fab = self._robust(pgd), self._robust(x_fab)
    self.assertLess(robust_pgd.mean(), clean.mean())  # PGD does something
    self.assertLessEqual(robust_fab.mean(), robust_pgd.mean())
    # The reported norms agree with the outcome: fooled inside the budget
    # exactly where the smallest perturbation found is within eps.
    norms = norms.numpy()
    self.assertAllEqual(robust_fab, clean & (norms > eps))
    self.assertAllEqual(norms[~clean], np.zeros(np.sum(~clean)))

  def test_respects_every_budget_element(self):
    rng = np.random.default_rng(0)
    eps_map = rng.uniform(0.0, 0.2, self.x.shape).astype(np.float32)
    eps_map[:, :, :14] = 0.0                   # half the image may not move
    # (Two targets: the budget is enforced per run, whatever the target.)
    for eps in (0.08, eps_map):
      x_adv = self.fab(self.x, self.y, eps, num_steps=30,
                       num_targets=2).numpy()
      x = self.x.numpy()
      self.assertTrue(np.all(np.abs(x_adv - x) <= eps))
      self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))
      self.assertLess(self._robust(x_adv).mean(),
                      self._robust(x).mean())      # and it fools some

  def test_constant_map_equals_scalar_budget(self):
    a = self.fab(self.x[:20], self.y[:20], 0.1, num_steps=20, num_targets=2)
    b = self.fab(self.x[:20], self.y[:20], tf.fill(self.x[:20].shape, 0.1),
                 num_steps=20, num_targets=2)
    self.assertAllClose(a, b)

  def test_restarts_start_inside_half_the_budget_and_never_hurt(self):
    eps = 0.06
    one = self._robust(self.fab(self.x, self.y, eps, num_steps=20,
                                num_targets=2))
    three = self._robust(self.fab(self.x, self.y, eps, num_steps=20,
                                  num_targets=2, num_restarts=3, seed=(4, 2)))
    # The first restart is the deterministic run: more can only add.
    self.assertTrue(np.all(three <= one))


if __name__ == "__main__":
  tf.test.main()
