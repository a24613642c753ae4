"""ACT (Adversarial Concurrent Training): its losses against numpy versions of
the paper's formulas, what each of its two models sees, its reductions (to
AT, and part_act to act), and saving its natural model."""

import dataclasses
import os
import shutil
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import attacks
from part_tf import methods
from part_tf import registry
from part_tf import regularisers
from part_tf.models import small_cnn
from part_tf.training import PARTModel
from tests.fakes import FixedOutputs

SHAPE = (12, 12, 3)


def _data(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=(n, *SHAPE)).astype(np.float32),
          rng.integers(0, 4, n).astype(np.int32))


def _softmax(z, t=1.0):
  z = z / t
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl(p, q):
  return (p * (np.log(p) - np.log(q))).sum(-1)


def _pair(seed=4):
  """A robust and a natural small CNN, each with its own fixed weights."""
  keras.utils.set_random_seed(seed)
  return small_cnn(SHAPE, 4), small_cnn(SHAPE, 4)


def _copy(model):
  twin = keras.models.clone_model(model)
  twin.set_weights(model.get_weights())
  return twin


def _act(robust, natural, **kwargs):
  """PARTModel with ACT's settings of these tests (`method` may be an
  `ACT(...)` with other hyper-parameters)."""
  settings = dict(method="act", epsilon=8 / 255, epsilon_low=8 / 255,
                  step_size=2 / 255, num_steps=2, seed=3)
  settings.update(kwargs)
  model = PARTModel(robust, natural_classifier=natural, **settings)
  model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                jit_compile=False)
  return model


def _train(model, x, y, steps=2):
  logs = None
  for start in range(0, steps * 8, 8):
    logs = model.train_on_batch(x[start:start + 8], y[start:start + 8],
                                return_dict=True)
  return logs


class LossTest(tf.test.TestCase):
  """L_G, L_F and the attack objective on fixed logits."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(1)
    self.g = rng.normal(size=(16, 5)).astype(np.float32) * 3  # G(x_adv)
    self.f = rng.normal(size=(16, 5)).astype(np.float32) * 3  # F(x)
    self.y = rng.integers(0, 5, 16)
    self.out = FixedOutputs(adv=self.g, natural=self.f)
    self.act = methods.ACT(alpha=0.7, beta=0.4, temperature=3.0)
    self.ce = lambda z: -np.log(_softmax(z)[np.arange(16), self.y])

  def test_robust_model_loss(self):
    t = 3.0
    expected = 0.3 * self.ce(self.g) + 0.7 * t * t * _kl(
        _softmax(self.f, t), _softmax(self.g, t))
    self.assertAllClose(self.act.train_loss(self.out, self.y), expected,
                        rtol=1e-5)

  def test_natural_model_loss(self):
    t = 3.0
    expected = 0.6 * self.ce(self.f) + 0.4 * t * t * _kl(
        _softmax(self.g, t), _softmax(self.f, t))
    self.assertAllClose(self.act.natural_loss(self.out, self.y), expected,
                        rtol=1e-5)

  def test_attack_objective_has_no_temperature(self):
    target = self.act.attack_target(self.out, None, None, self.y)
    expected = 0.3 * self.ce(self.g) + 0.7 * _kl(_softmax(self.f),
                                                 _softmax(self.g))
    self.assertAllClose(self.act.attack_loss(tf.constant(self.g), target),
                        expected, rtol=1e-5)

  def test_teachers_are_held_fixed(self):
    g, f = tf.Variable(self.g), tf.Variable(self.f)

    class Live(FixedOutputs):
      def logits(self, which):
        return g.read_value()

      def natural_logits(self):
        return f.read_value()

    with tf.GradientTape(persistent=True) as tape:
      robust = tf.reduce_sum(self.act.train_loss(Live(), self.y))
      natural = tf.reduce_sum(self.act.natural_loss(Live(), self.y))
    self.assertIsNone(tape.gradient(robust, f))
    self.assertIsNone(tape.gradient(natural, g))


@pytest.mark.slow
class ConcurrentTrainingTest(tf.test.TestCase):

  def test_both_models_are_updated(self):
    robust, natural = _pair()
    before = [robust.get_weights(), natural.get_weights()]
    x, y = _data()
    logs = _train(_act(robust, natural), x, y)
    for b, after in zip(before, (robust.get_weights(), natural.get_weights())):
      for wb, wa in zip(b, after):
        self.assertNotAllClose(wb, wa)
    for name in ("loss", "natural_model_loss", "natural_model_accuracy"):
      self.assertTrue(np.isfinite(logs[name]))

  def test_natural_model_never_sees_adversarial_examples(self):
    # With beta = 0 the natural model learns from clean images only: its
    # weights do not depend on the budget (the AEs), and equal plain
    # natural training; the robust model's do depend on it.
    x, y = _data()
    results = []
    for epsilon in (2 / 255, 16 / 255):
      robust, natural = _pair()
      _train(_act(robust, natural, method=methods.ACT(beta=0.0),
                  epsilon=epsilon, epsilon_low=epsilon), x, y)
      results.append((robust.get_weights(), natural.get_weights()))
    for wa, wb in zip(results[0][1], results[1][1]):
      self.assertAllEqual(wa, wb)
    self.assertNotAllClose(results[0][0][0], results[1][0][0])
    # Plain SGD with momentum on CE(F(x), y), written out.
    _, plain = _pair()
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    for start in (0, 8):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(attacks.cross_entropy(
            plain(x[start:start + 8], training=True), y[start:start + 8]))
      optimizer.apply(tape.gradient(loss, plain.trainable_variables),
                      plain.trainable_variables)
    for wa, wb in zip(results[0][1], plain.get_weights()):
      self.assertAllClose(wa, wb, atol=1e-6)

  def test_alpha_zero_trains_the_robust_model_as_at(self):
    # The paper's robust model without distillation is AT (with ACT's
    # 0.001 N(0, 1) start): same weights, bit for bit.
    x, y = _data()
    robust, natural = _pair()
    at_model = _copy(robust)
    _train(_act(robust, natural, method=methods.ACT(alpha=0.0)), x, y)

    @dataclasses.dataclass(frozen=True)
    class ATWithACTStart(methods.AT):
      """AT with ACT's random start."""

      def attack_init(self):
        return attacks.gaussian_init(0.001)

    methods.register("at_act_start")(ATWithACTStart)
    self.addCleanup(registry.METHODS.remove, "at_act_start")
    reference = PARTModel(at_model, method=ATWithACTStart(),
                          epsilon=8 / 255, epsilon_low=8 / 255,
                          step_size=2 / 255, num_steps=2, seed=3)
    reference.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      jit_compile=False)
    _train(reference, x, y)
    for wa, wb in zip(robust.get_weights(), at_model.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_part_act_with_equal_budgets_is_act(self):
    x, y = _data()
    robust, natural = _pair()
    robust2, natural2 = _copy(robust), _copy(natural)
    plain = _act(robust, natural, weight_decay=1e-3)
    part = _act(robust2, natural2, method="part_act", weight_decay=1e-3,
                burn_in_epochs=0)
    logs = [_train(plain, x, y), _train(part, x, y)]
    self.assertEqual(logs[0], logs[1])
    for a, b in ((robust, robust2), (natural, natural2)):
      for wa, wb in zip(a.get_weights(), b.get_weights()):
        self.assertAllEqual(wa, wb)

  def test_natural_model_is_saved_and_restored_with_the_model(self):
    x, y = _data()
    robust, natural = _pair()
    centre_loss = [regularisers.CenterLoss(weight=0.1)]
    model = _act(robust, natural, method=methods.ACT(alpha=0.8),
                 regularisers=centre_loss)
    _train(model, x, y)
    folder = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, folder)
    path = os.path.join(folder, "act.weights.h5")
    model.save_weights(path)
    robust2, natural2 = _pair(seed=9)
    twin = _act(robust2, natural2, method=methods.ACT(alpha=0.8),
                regularisers=centre_loss)
    twin.load_weights(path)
    for wa, wb in zip(natural.get_weights(), natural2.get_weights()):
      self.assertAllEqual(wa, wb)
    self.assertGreater(np.abs(model.center_loss.centres.numpy()).sum(), 0.0)
    self.assertAllEqual(twin.center_loss.centres, model.center_loss.centres)
    config = model.get_config()
    again = PARTModel.from_config(config)
    self.assertEqual(again.natural_classifier.output_shape, (None, 4))
    self.assertEqual(again.method, methods.ACT(alpha=0.8))
    self.assertEqual(again.regularisers, tuple(centre_loss))

  def test_natural_model_of_another_architecture(self):
    robust, _ = _pair()
    inputs = keras.Input(SHAPE)
    natural = keras.Model(inputs, keras.layers.Dense(4)(
        keras.layers.Flatten()(inputs)))
    before = natural.get_weights()
    x, y = _data()
    logs = _train(_act(robust, natural), x, y)
    self.assertTrue(np.isfinite(logs["natural_model_loss"]))
    self.assertNotAllClose(before[0], natural.get_weights()[0])

  def test_bad_settings_are_refused(self):
    robust, natural = _pair()
    with self.assertRaisesRegex(ValueError, "pass natural_classifier"):
      PARTModel(robust, method="act")
    with self.assertRaisesRegex(ValueError, "trains no natural model"):
      PARTModel(robust, method="at", natural_classifier=natural)
    with self.assertRaisesRegex(ValueError,
                                "^act_alpha must be <= 1, got 1.5$"):
      PARTModel(robust, method=methods.ACT(alpha=1.5),
                natural_classifier=natural)
    with self.assertRaisesRegex(ValueError, "shares weights"):
      PARTModel(robust, method="act", natural_classifier=robust)
    with self.assertRaisesRegex(ValueError, "natural model maps"):
      PARTModel(robust, method="act",
                natural_classifier=small_cnn(SHAPE, 7))


if __name__ == "__main__":
  tf.test.main()
