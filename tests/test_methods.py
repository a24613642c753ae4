"""The PART family: TRADES / MART losses, MMA crafting, reductions to the base
methods, and a smoke test over every method x CAM x mask rule."""

import itertools

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from part_tf import attacks
from part_tf import cam
from part_tf import methods
from part_tf import run_settings
from part_tf.config import TrainConfig
from part_tf.models import CAM_LAYER
from part_tf.models import small_cnn
from part_tf.training import PARTModel
from tests.fakes import FixedOutputs

SHAPE = (12, 12, 3)


def _data(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=(n, *SHAPE)).astype(np.float32),
          rng.integers(0, 4, n).astype(np.int32))


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


class LossTest(tf.test.TestCase):
  """The training losses against numpy versions of the reference formulas."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(1)
    self.nat = rng.normal(size=(16, 5)).astype(np.float32) * 3
    self.adv = rng.normal(size=(16, 5)).astype(np.float32) * 3
    self.y = rng.integers(0, 5, 16)
    self.out = FixedOutputs(clean=self.nat, adv=self.adv)

  def test_trades(self):
    loss = methods.TRADES(beta=6.0).train_loss(self.out, self.y)
    p_nat, p_adv = _softmax(self.nat), _softmax(self.adv)
    ce = -np.log(p_nat[np.arange(16), self.y])
    kl = (p_nat * (np.log(p_nat) - np.log(p_adv))).sum(-1)
    self.assertAllClose(loss, ce + 6.0 * kl, rtol=1e-5)  # per example

  def test_mart(self):
    loss = methods.MART(beta=6.0).train_loss(self.out, self.y)
    p_nat, p_adv = _softmax(self.nat), _softmax(self.adv)
    rows = np.arange(16)
    order = np.argsort(p_adv, axis=1)
    wrong = np.where(order[:, -1] == self.y, order[:, -2], order[:, -1])
    bce = (-np.log(p_adv[rows, self.y])
           - np.log(1.0001 - p_adv[rows, wrong] + 1e-12))
    kl = (p_nat * (np.log(p_nat) - np.log(p_adv + 1e-12))).sum(-1)
    robust = kl * (1.0000001 - p_nat[rows, self.y])
    self.assertAllClose(loss, bce + 6.0 * robust, rtol=1e-5)

  def test_at(self):
    loss = methods.AT().train_loss(self.out, self.y)
    p_adv = _softmax(self.adv)
    self.assertAllClose(loss, -np.log(p_adv[np.arange(16), self.y]),
                        rtol=1e-5)

  def test_kl_attack_loss_is_zero_at_the_clean_point(self):
    probs = tf.nn.softmax(self.nat)
    self.assertAllClose(attacks.kl_from_clean(self.nat, probs),
                        np.zeros(16), atol=1e-6)
    self.assertTrue(np.all(attacks.kl_from_clean(self.adv, probs) > 0))


class MMATest(tf.test.TestCase):

  def test_keeps_the_worst_of_the_targeted_runs_within_budget(self):
    keras.utils.set_random_seed(2)
    model = small_cnn(SHAPE, 6)
    model_fn = lambda z: model(z, training=False)
    x, y = _data(24)
    eps = np.where(np.random.default_rng(0).uniform(size=x.shape) > 0.5,
                   0.1, 0.03).astype(np.float32)
    x_adv = attacks.mma(model_fn, x, y, eps, 0.02, 5, k=3,
                        init_fn=attacks.no_init).numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps + 1e-6))
    self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))
    # Independently: one targeted run per wrong class among the top 3.
    logits = model_fn(x).numpy()
    logits[np.arange(24), y] = -np.inf
    targets = np.argsort(-logits, axis=1)[:, :3]
    violations = []
    for r in range(3):
      run = attacks.pgd(model_fn, x, np.stack([y, targets[:, r]], 1), eps,
                        0.02, 5, loss_fn=attacks.targeted_margin,
                        init_fn=attacks.no_init)
      violations.append(attacks.margin_violation(model_fn(run), y).numpy())
    ours = attacks.margin_violation(model_fn(x_adv), y).numpy()
    self.assertAllClose(ours, np.max(violations, axis=0), atol=1e-4)
    self.assertGreater(np.mean(ours), np.mean(
        attacks.margin_violation(model_fn(x), y).numpy()))

  def test_k_must_leave_a_wrong_class(self):
    model = small_cnn(SHAPE, 3)
    x, y = _data(4)
    with self.assertRaisesRegex(ValueError, "k <= num_classes - 1"):
      attacks.mma(lambda z: model(z), x, y % 3, 0.1, 0.02, 1, k=3)


PAIRS = [("at", "part"), ("trades", "part_t"), ("mart", "part_m")]


class FamilyTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*itertools.product(PAIRS, ("pgd", "mma")))
  def test_part_variant_with_equal_budgets_is_its_base(self, pair, attack):
    base_name, part_name = pair
    x, y = _data()
    keras.utils.set_random_seed(4)
    a = small_cnn(SHAPE, 4)
    b = small_cnn(SHAPE, 4)
    b.set_weights(a.get_weights())
    kwargs = dict(epsilon=8 / 255, epsilon_low=8 / 255, step_size=2 / 255,
                  num_steps=2, seed=3, attack=attack, weight_decay=1e-3)
    base = PARTModel(a, method=base_name, **kwargs)
    part = PARTModel(b, method=part_name, burn_in_epochs=0, **kwargs)
    for model in (base, part):
      model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                    jit_compile=False)
    for start in (0, 16):
      log_base = base.train_on_batch(x[start:start + 16], y[start:start + 16],
                                     return_dict=True)
      log_part = part.train_on_batch(x[start:start + 16], y[start:start + 16],
                                     return_dict=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(wa, wb)
    self.assertEqual(log_base["loss"], log_part["loss"])

  @parameterized.parameters(
      [(m, None, None, "pgd") for m in ("at", "trades", "mart")] +
      [(m, c, r, "pgd") for m, c, r in itertools.product(
          ("part", "part_t", "part_m"), cam.CAM_METHODS.names(),
          cam.MASK_RULES.names())] +
      [(m, "gradcam_plus_plus", "zscore", "mma")
       for m in ("part", "part_t", "part_m")])
  def test_every_combination_trains_within_budget(self, method, cam_method,
                                                  rule, attack):
    # `fit` on NumPy arrays: the batch dimension is unknown when the step is
    # traced, and the last batch (4 of 16) is partial.
    x, y = _data(16)
    keras.utils.set_random_seed(0)
    model = PARTModel(small_cnn(SHAPE, 4), method=method, epsilon=0.1,
                      epsilon_low=0.03, step_size=0.03, num_steps=2,
                      cam=cam_method or "gradcam_plus_plus",
                      mask_rule=rule or "zscore", attack=attack,
                      burn_in_epochs=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    before = model.get_weights()
    logs = model.fit(x, y, batch_size=6, epochs=1, shuffle=False,
                     verbose=0).history
    self.assertTrue(np.isfinite(logs["loss"][0]))
    self.assertNotAllClose(before[1], model.get_weights()[1])
    eps_map = model.budget(tf.constant(x)).numpy()
    if rule is None:
      self.assertAllClose(eps_map, np.full(x.shape, 0.1))
      self.assertAllClose(logs["full_eps_fraction"][0], 1.0)
    else:
      self.assertBetween(eps_map.min(), 0.03 - 1e-7, 0.1)
      self.assertLess(eps_map.mean(), 0.1)
      self.assertLess(logs["eps_mean"][0], 0.1)
    x_adv = model.craft(tf.constant(x), tf.constant(y), eps_map,
                        [0, 0]).numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps_map + 1e-6))
    self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))


def _batch_norm_model():
  """A tiny classifier with batch norm, its CAM layer named as PART's."""
  inputs = keras.Input(SHAPE)
  h = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(inputs)
  h = keras.layers.BatchNormalization(momentum=0.9)(h)
  h = keras.layers.ReLU(name=CAM_LAYER)(h)
  h = keras.layers.GlobalAveragePooling2D()(h)
  return keras.Model(inputs, keras.layers.Dense(4)(h))


def _moving_statistics(model):
  return [v.numpy() for v in model.non_trainable_variables]


class TradesCleanPassesTest(tf.test.TestCase, parameterized.TestCase):
  """`trades_clean_passes=2` runs the reference's forward passes."""

  def _step(self, method, passes, x, y):
    """(model after one step, its weights before, its AEs, its logs)."""
    keras.utils.set_random_seed(2)
    model = PARTModel(_batch_norm_model(),
                      method=methods.get(method)(clean_passes=passes),
                      epsilon=8 / 255, epsilon_low=4 / 255, step_size=2 / 255,
                      num_steps=3, seed=5, burn_in_epochs=0)
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
    start = model.classifier.get_weights()
    self.trainable_start = [w.numpy()
                            for w in model.classifier.trainable_weights]
    x_adv = model.craft(tf.constant(x), tf.constant(y),
                        model.budget(tf.constant(x)), model.step_seed())
    logs = model.train_on_batch(x, y, return_dict=True)
    return model, start, x_adv, logs

  @parameterized.parameters("trades", "part_t")
  def test_moving_statistics_follow_the_reference_passes(self, method):
    x, y = _data(16)
    statistics = {}
    for passes in (1, 2):
      model, start, x_adv, _ = self._step(method, passes, x, y)
      statistics[passes] = _moving_statistics(model.classifier)
      # The reference's passes by hand: loss/trades.py runs
      # model(x_natural), then model(x_adv) and model(x_natural) inside its
      # KL, all in train mode.
      hand = keras.models.clone_model(model.classifier)
      hand.set_weights(start)
      for batch in ((x, x_adv) if passes == 1 else (x, x_adv, x)):
        hand(batch, training=True)
      for got, expected in zip(statistics[passes], _moving_statistics(hand)):
        self.assertAllClose(got, expected, rtol=1e-5, atol=1e-6)
    for one, two in zip(statistics[1], statistics[2]):
      self.assertNotAllClose(one, two)

  @parameterized.parameters("trades", "part_t")
  def test_loss_and_update_are_those_of_one_pass(self, method):
    # In float64, so that the two orders of summing the gradient (one
    # backward pass of the clean batch, or two) agree to ~1e-12, not to
    # float32's rounding amplified by the KL's cancelling terms.
    policy = keras.config.dtype_policy()
    self.addCleanup(keras.config.set_dtype_policy, policy)
    keras.config.set_dtype_policy("float64")
    x, y = _data(16)
    results = {passes: self._step(method, passes, x.astype(np.float64), y)
               for passes in (1, 2)}
    start = self.trainable_start  # the same for both
    self.assertAllClose(results[1][3]["loss"], results[2][3]["loss"],
                        rtol=1e-12)
    one, two = results[1][0], results[2][0]
    for w1, w2, w0 in zip(one.classifier.trainable_weights,
                          two.classifier.trainable_weights, start):
      update1, update2 = w1.numpy() - w0, w2.numpy() - w0
      scale = np.abs(update1).max()
      self.assertGreater(scale, 1e-4)
      # The second pass's gradient flows, as in the reference: had its
      # target been held constant, the update would differ.
      self.assertAllClose(update2, update1, rtol=0, atol=1e-9 * scale)

  @parameterized.parameters("trades", "part_t")
  def test_the_passes_are_checked_and_saved(self, method):
    for passes in (0, 3):
      with self.assertRaisesRegex(ValueError, "^trades_clean_passes must be "
                                  f"(>= 1 and <= 2|<= 2), got {passes}$"):
        methods.get(method)(clean_passes=passes)
    model = PARTModel(_batch_norm_model(),
                      method=methods.get(method)(clean_passes=2))
    again = PARTModel.from_config(model.get_config())
    self.assertEqual(again.method, methods.get(method)(clean_passes=2))
    # A model saved before #23: the flat config of then, without the
    # setting, loads with one pass.
    self.assertEqual(PARTModel.from_config(_flat_config(model)).method,
                     methods.get(method)(clean_passes=1))

  def test_an_older_run_resumes_with_one_pass(self):
    for method in ("trades", "part_t"):
      today = run_settings.settings(TrainConfig.from_flat(
          {"model_dir": "run", "method": method}))
      self.assertEqual(today["trades_clean_passes"], 1)
      older = dict(today)
      del older["trades_clean_passes"]  # a config.json written before #23
      run_settings.upgrade(older)
      # A resume compares the settings today's run records (config.json
      # records only those a run uses; the upgrade may add others).
      self.assertEqual({k: older.get(k) for k in today}, today)


def _flat_config(model):
  """`model`'s config as PARTModel.get_config wrote it before #23 and #21:
  flat settings, no `trades_clean_passes`, no burn-in."""
  config = model.get_config()
  return {"classifier": config["classifier"], "method": config["method"],
          "epsilon": model.epsilon, "epsilon_low": model.epsilon_low,
          "step_size": model.step_size, "num_steps": model.num_steps,
          "cam": model.cam, "mask_rule": model.mask_rule,
          "cam_layer": CAM_LAYER, "weight_decay": 0.0, "seed": 0,
          "beta": 6.0, "attack": "pgd",
          "natural_classifier": None, "act_alpha": 0.9, "act_beta": 0.9,
          "act_temperature": 4.0, "consistency_weight": 0.0,
          "consistency_temperature": 0.5, "feature_alignment_weight": 0.0,
          "center_loss_weight": 0.0, "center_lr": 0.5, "feature_layer": None,
          "name": config["name"]}


if __name__ == "__main__":
  tf.test.main()
