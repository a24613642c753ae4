"""APGD / APGD-T: budgets, schedule, strength vs PGD and vs ART's AutoPGD,
and every iterate of AutoAttack's APGD (a numpy transcription)."""

import importlib

import keras
import numpy as np
import tensorflow as tf

from part_tf.attacks.pgd import pgd
from part_tf.data import datasets
from part_tf.models import small_cnn
from tests import autoattack_reference

# The module, not the function of the same name that part_tf.attacks exports.
apgd_lib = importlib.import_module("part_tf.attacks.apgd")

EPS = 0.1
STEPS = 20
N = 200
N_TARGETED = 100  # APGD-T costs 9 runs: compared on a subset.


def _accuracy(model, x, y):
  pred = np.argmax(model.predict(np.asarray(x), batch_size=256, verbose=0), 1)
  return float(np.mean(pred == np.asarray(y)))


def _autoattack_halvings(initial, losses, rho=0.75, less_equal=True,
                         first_reduced=True, zero_record=True):
  """Where AutoAttack's APGD halves its step size, from a loss trace.

  NumPy, written from fra31/auto-attack's `autopgd_base.py`
  (`attack_single_run`, `check_oscillation`): at a checkpoint closing an
  interval of k steps, halve where the loss rose in at most rho * k of
  them, or where the step was not halved at the last checkpoint and the
  best loss has not improved since. The increases are counted over its
  record of step losses, which starts as zeros (the first step's loss is
  compared with index -1 of that record). The keyword arguments switch
  each of those three points off, to show that the test tells them apart.

  Args:
    initial: loss at the starting point [B].
    losses: loss after each step [N, B].

  Returns:
    bool [N, B], True where the step size is halved.
  """
  n = len(losses)
  record = np.zeros_like(losses)
  loss_best = initial.copy()
  k = max(int(0.22 * n), 1)
  size_decr, k_min = max(int(0.03 * n), 1), max(int(0.06 * n), 1)
  reduced_last_check = np.full(initial.shape, first_reduced)
  loss_best_last_check = loss_best.copy()
  since, halved = 0, np.zeros(losses.shape, bool)
  for i in range(n):
    record[i] = losses[i]
    loss_best = np.where(losses[i] > loss_best, losses[i], loss_best)
    since += 1
    if since == k:
      before = lambda j: (record[j] if j >= 0 or zero_record  # pylint: disable=cell-var-from-loop
                          else initial)
      rises = sum((record[i - c] > before(i - c - 1)).astype(np.float32)
                  for c in range(k))
      oscillating = (rises <= k * rho) if less_equal else (rises < k * rho)
      no_improvement = ~reduced_last_check & (loss_best_last_check >=
                                              loss_best)
      halved[i] = reduced_last_check = oscillating | no_improvement
      loss_best_last_check = loss_best.copy()
      k, since = max(k - size_decr, k_min), 0
  return halved


def _scripted_model(values):
  """A model_fn whose logits[:, 0] at its j-th call are values[j] (with a
  zero gradient): with the loss `logits[:, 0]`, APGD sees this loss trace."""
  calls = [0]

  def model_fn(z):
    v = tf.constant(values[calls[0]], tf.float32)
    calls[0] += 1
    dependence = 0.0 * tf.reduce_sum(z, axis=[1, 2, 3])
    return tf.stack([v, tf.zeros_like(v)], axis=-1) + dependence[:, None]
  return model_fn


class CheckpointRuleTest(tf.test.TestCase):
  """APGD's step-size decisions against AutoAttack's rule."""

  def _run(self, model_fn, x, y, num_steps, loss):
    _, _, _, trace = apgd_lib._apgd_once(  # pylint: disable=protected-access
        model_fn, x, y, tf.fill(tf.shape(x), EPS), num_steps,
        apgd_lib._loss_fn(loss, None), 0.75, tf.constant([0, 0], tf.int64),  # pylint: disable=protected-access
        True, record=True)
    return (trace["initial"].numpy(), trace["losses"].numpy(),
            trace["halved"].numpy())

  def test_scripted_traces_give_autoattack_decisions(self):
    # Losses on a coarse grid (ties, plateaus, exactly 0.75 k increases),
    # partly negative (as DLR's are), run through the real APGD loop.
    rng = np.random.default_rng(0)
    for num_steps in (100, 20, 7, 1):
      values = np.cumsum(rng.integers(-2, 3, size=(num_steps + 1, 256)),
                         axis=0).astype(np.float32) / 4 - 1.0
      if num_steps == 100:  # first interval: 22 steps
        # Rising in 21 of them but staying below the start: no halving at
        # the first checkpoint, whose "no improvement" test is off.
        values[:, 0] = np.r_[100.0, np.arange(num_steps) / 4 - 50]
        # Below 0 but above the start, then 16 rises: 16 <= 0.75 * 22
        # increases counted from the zero record (17 from the start).
        values[:23, 1] = np.r_[-10.0, -5.0, -5 + np.minimum(
            np.arange(1, 22), 16) / 4]
      x = tf.zeros([256, 2, 2, 1])
      initial, losses, halved = self._run(
          _scripted_model(values), x, tf.zeros([256], tf.int32), num_steps,
          lambda logits, y: logits[:, 0])
      self.assertAllEqual(losses, values[1:])
      expected = _autoattack_halvings(initial, losses)
      self.assertAllEqual(halved, expected)
      if num_steps != 100:
        continue
      self.assertBetween(expected.any(axis=0).mean(), 0.2, 1.0)
      # Each of AutoAttack's three details changes some decision here.
      for variant in (dict(less_equal=False), dict(first_reduced=False),
                      dict(zero_record=False)):
        self.assertNotAllEqual(
            _autoattack_halvings(initial, losses, **variant), expected,
            msg=str(variant))

  def test_recorded_attack_traces_give_autoattack_decisions(self):
    train, test, _ = datasets.load("mnist_offline", max_train=1000,
                                   max_test=64)
    keras.utils.set_random_seed(1)
    model = small_cnn((28, 28, 1), 10)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.images / 255.0, train.labels, batch_size=100, epochs=1,
              verbose=0)
    x = tf.constant(test.images / 255.0, tf.float32)
    y = tf.constant(test.labels, tf.int32)
    for loss in ("ce", "dlr"):
      initial, losses, halved = self._run(
          lambda z: model(z, training=False), x, y, 40, loss)
      self.assertGreater(halved.sum(), 0)
      self.assertAllEqual(halved, _autoattack_halvings(initial, losses))


class APGDTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    train, test, _ = datasets.load("mnist_offline")
    keras.utils.set_random_seed(0)
    cls.model = small_cnn((28, 28, 1), 10)
    cls.model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cls.model.fit(train.images / 255.0, train.labels, batch_size=128,
                  epochs=1, verbose=0)
    cls.x = tf.constant(test.images[:N] / 255.0, tf.float32)
    cls.y = tf.constant(test.labels[:N], tf.int32)
    model = cls.model
    cls.model_fn = staticmethod(lambda z: model(z, training=False))
    cls.clean_acc = _accuracy(model, cls.x, cls.y)
    cls._cache = {}

  def _attack(self, name):
    """Runs (and caches) one attack on the shared model and examples."""
    if name not in self._cache:
      f = self.model_fn
      fns = {
          "ce": lambda x, y: apgd_lib.apgd(f, x, y, EPS, num_steps=STEPS),
          "dlr": lambda x, y: apgd_lib.apgd(f, x, y, EPS, num_steps=STEPS,
                                            loss="dlr"),
          "dlr_subset": lambda x, y: apgd_lib.apgd(
              f, x[:N_TARGETED], y[:N_TARGETED], EPS, num_steps=STEPS,
              loss="dlr"),
          "t_subset": lambda x, y: apgd_lib.apgd_targeted(
              f, x[:N_TARGETED], y[:N_TARGETED], EPS, num_steps=STEPS,
              num_targets=9,
              tile_targets=True),
          "pgd": lambda x, y: pgd(f, x, y, EPS, step_size=EPS / 4,
                                  num_steps=20),
      }
      x_adv = tf.function(fns[name])(self.x, self.y)
      n = x_adv.shape[0]
      self._check_valid(x_adv, self.x[:n], EPS)
      self._cache[name] = _accuracy(self.model, x_adv, self.y[:n])
    return self._cache[name]

  def _check_valid(self, x_adv, x, eps):
    x_adv, x = np.asarray(x_adv), np.asarray(x)
    eps = np.broadcast_to(np.asarray(eps, np.float32), x.shape)
    self.assertEqual(x_adv.shape, x.shape)
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps + 1e-6))
    self.assertTrue(np.all((x_adv >= 0.0) & (x_adv <= 1.0)))

  def test_model_is_not_at_chance(self):
    self.assertGreater(self.clean_acc, 0.85)

  def test_budget_and_range_scalar_and_map(self):
    x, y = self.x[:16], self.y[:16]
    rng = np.random.default_rng(0)
    eps_map = rng.choice([0.0, 0.05, 0.3], size=x.shape).astype(np.float32)
    f = self.model_fn
    for eps in (0.1, eps_map):
      for x_adv in (
          apgd_lib.apgd(f, x, y, eps, num_steps=6),
          apgd_lib.apgd(f, x, y, eps, num_steps=4, loss="dlr",
                        num_restarts=2, seed=(3, 4)),
          apgd_lib.apgd_targeted(f, x, y, eps, num_steps=3, num_targets=2),
          apgd_lib.apgd_targeted(f, x, y, eps, num_steps=3, num_targets=3,
                                 tile_targets=True)):
        self._check_valid(x_adv, x, eps)
        if eps is eps_map:
          still = eps_map == 0.0
          self.assertAllEqual(np.asarray(x_adv)[still], x.numpy()[still])
          big = eps_map == 0.3
          self.assertGreater(np.abs(np.asarray(x_adv) - x.numpy())[big].max(),
                             0.2)

  def test_checkpoint_schedule_follows_croce_hein(self):
    is_ckpt, length = apgd_lib.checkpoint_schedule(100)
    steps = [i + 1 for i, c in enumerate(is_ckpt) if c]
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (intervals >= .06).
    self.assertEqual(steps, [22, 41, 57, 70, 80, 87, 93, 99])
    self.assertEqual([l for l in length if l], [22, 19, 16, 13, 10, 7, 6, 6])

  def test_dlr_losses_match_formula(self):
    logits = tf.constant([[5.0, 3.0, 1.0, 0.0], [1.0, 4.0, 2.0, -1.0]])
    y = tf.constant([0, 0])
    # Example 0: -(5 - 3) / (5 - 1); example 1: -(1 - 4) / (4 - 1).
    self.assertAllClose(apgd_lib.dlr_loss(logits, y), [-0.5, 1.0])
    t = tf.constant([2, 1])
    # -(z_y - z_t) / (z1 - (z3 + z4) / 2).
    self.assertAllClose(apgd_lib.targeted_dlr_loss(logits, y, t),
                        [-(5 - 1) / (5 - 0.5), -(1 - 4) / (4 - 0.0)])

  def test_traces_once_per_shape(self):
    f = self.model_fn
    run = tf.function(lambda x, y: apgd_lib.apgd(f, x, y, EPS, num_steps=4))
    run(self.x[:8], self.y[:8])
    run(self.x[8:16], self.y[8:16])
    self.assertEqual(run.experimental_get_tracing_count(), 1)

  def test_apgd_ce_at_least_as_strong_as_pgd20(self):
    ours, pgd_acc = self._attack("ce"), self._attack("pgd")
    print(f"\nclean {self.clean_acc:.3f} APGD-CE {ours:.3f} PGD-20 {pgd_acc:.3f}")
    self.assertLess(pgd_acc, self.clean_acc - 0.1)  # A non-empty comparison.
    self.assertLessEqual(ours, pgd_acc + 0.02)

  def test_targeted_at_least_as_strong_as_dlr(self):
    targeted, dlr = self._attack("t_subset"), self._attack("dlr_subset")
    clean = _accuracy(self.model, self.x[:N_TARGETED], self.y[:N_TARGETED])
    print(f"\nclean {clean:.3f} APGD-T {targeted:.3f} APGD-DLR {dlr:.3f}")
    self.assertLess(dlr, clean - 0.1)
    self.assertLessEqual(targeted, dlr + 0.02)

  def test_targeted_loop_and_tiled_agree(self):
    x, y, f = self.x[:32], self.y[:32], self.model_fn
    kw = dict(num_steps=6, num_targets=3, random_start=False)
    loop = apgd_lib.apgd_targeted(f, x, y, EPS, **kw)
    tiled = apgd_lib.apgd_targeted(f, x, y, EPS, tile_targets=True, **kw)
    self.assertLessEqual(abs(_accuracy(self.model, loop, y) -
                             _accuracy(self.model, tiled, y)), 1 / 32 + 1e-9)

  def test_agrees_with_art_auto_pgd(self):
    from art.attacks.evasion import AutoProjectedGradientDescent  # pylint: disable=g-import-not-at-top
    from art.estimators.classification import TensorFlowV2Classifier  # pylint: disable=g-import-not-at-top
    classifier = TensorFlowV2Classifier(
        self.model, nb_classes=10, input_shape=(28, 28, 1),
        loss_object=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True),
        clip_values=(0.0, 1.0))
    for ours_name, loss_type in (("ce", "cross_entropy"),
                                 ("dlr", "difference_logits_ratio")):
      attack = AutoProjectedGradientDescent(
          classifier, norm=np.inf, eps=EPS, eps_step=2 * EPS,
          max_iter=STEPS, nb_random_init=1, batch_size=N,
          loss_type=loss_type, verbose=False)
      x_art = attack.generate(self.x.numpy(), y=self.y.numpy())
      self._check_valid(x_art, self.x, EPS)
      art_acc = _accuracy(self.model, x_art, self.y)
      ours = self._attack(ours_name)
      print(f"\n{loss_type}: ours {ours:.3f} ART {art_acc:.3f}")
      self.assertLess(art_acc, self.clean_acc - 0.1)
      self.assertLessEqual(abs(ours - art_acc), 0.02)


class AutoAttackTranscriptionTest(tf.test.TestCase):
  """Ours against `tests/autoattack_reference.py` on a linear classifier,
  started at `x` (no random draw), at 10 iterations (torchattacks 3.4.0's
  default, the reference code's evaluation) and 100 (AutoAttack's): the
  same points, so the same step sizes and checkpoint decisions."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    rng = np.random.default_rng(0)
    n, dim, classes = 64, 20, 10
    cls.x = rng.uniform(size=(n, dim))
    cls.w = rng.normal(size=(dim, classes))
    cls.b = 0.1 * rng.normal(size=classes)
    clean = cls.x @ cls.w + cls.b
    cls.y = clean.argmax(axis=1)            # every example starts correct
    cls.order = np.argsort(-clean, axis=1)  # its classes, most likely first
    w, b = tf.constant(cls.w), tf.constant(cls.b)
    cls.model_fn = staticmethod(lambda z: tf.matmul(z, w) + b)

  def _ours(self, eps, steps, target=None):
    run = tf.function(lambda x, y: apgd_lib.apgd(
        self.model_fn, x, y, eps, num_steps=steps,
        loss="ce" if target is None else "dlr",
        target=None if target is None else tf.constant(target),
        random_start=False))
    return run(tf.constant(self.x), tf.constant(self.y)).numpy()

  def test_every_point_is_autoattacks(self):
    # CE is APGD-CE's loss, targeted DLR (against the 3rd most likely class)
    # APGD-T's. Untargeted DLR is left out: on a linear model it is flat
    # (gradient 0) once y is the third class, and the sign of a rounding
    # error then decides the step.
    for steps in (10, 100):
      for eps in (0.05, 0.1):
        for target in (None, self.order[:, 2]):
          with self.subTest(steps=steps, eps=eps, targeted=target is not None):
            x_best, robust, x_adv = autoattack_reference.apgd_run(
                self.x, self.y, self.w, self.b, eps, steps,
                "ce" if target is None else "dlr", target)
            # Not a trivial comparison: some fooled, some not.
            self.assertBetween(robust.mean(), 0.1, 0.9)
            expected = np.where(robust[:, None], x_best, x_adv)
            # The tolerance covers a sign flip of a near-zero gradient
            # element (ours float32) once the step is down to ~1e-5.
            self.assertAllClose(self._ours(eps, steps, target), expected,
                                atol=1e-4, rtol=0)

  def test_apgd_t_keeps_the_first_target_that_fools(self):
    # APGD-T as torchattacks' APGDT.perturb: the targets are the 2nd, 3rd,
    # ... most likely classes, each run only on the examples no earlier
    # target fooled.
    eps, steps, targets = 0.05, 10, 4
    robust = np.ones(len(self.y), bool)
    expected = self.x.copy()
    for j in range(1, targets + 1):
      _, robust_j, x_adv = autoattack_reference.apgd_run(
          self.x, self.y, self.w, self.b, eps, steps, "dlr",
          self.order[:, j])
      fooled_now = robust & ~robust_j
      expected[fooled_now] = x_adv[fooled_now]
      robust &= robust_j
    self.assertBetween(robust.mean(), 0.1, 0.9)
    ours = tf.function(lambda x, y: apgd_lib.apgd_targeted(
        self.model_fn, x, y, eps, num_steps=steps, num_targets=targets,
        random_start=False))(tf.constant(self.x), tf.constant(self.y)).numpy()
    fooled = (ours @ self.w + self.b).argmax(axis=1) != self.y
    self.assertAllEqual(fooled, ~robust)
    self.assertAllClose(ours[fooled], expected[fooled], atol=1e-4, rtol=0)


if __name__ == "__main__":
  tf.test.main()
