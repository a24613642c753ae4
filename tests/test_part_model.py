"""PARTModel: reduction to AT, burn-in switch, resume of the switch, config."""

import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from part_tf.models import small_cnn
from part_tf.training import BurnInSwitch
from part_tf.training import PARTModel
from part_tf.training.checkpointing import AtomicBackupAndRestore
from part_tf.training.checkpointing import read_state

SHAPE = (16, 16, 3)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pair_of_classifiers():
  keras.utils.set_random_seed(4)
  a = small_cnn(SHAPE, 4)
  b = small_cnn(SHAPE, 4)
  b.set_weights(a.get_weights())
  return a, b


def _data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=(n, *SHAPE)).astype(np.float32),
          rng.integers(0, 4, n).astype(np.int32))


def _compile(model):
  model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                jit_compile=False)
  return model


class Recorder(keras.callbacks.Callback):
  """Records `part_active` during each epoch's first batch, and epoch logs."""

  def __init__(self):
    super().__init__()
    self.active, self.logs = [], []

  def on_train_batch_end(self, batch, logs=None):
    if batch == 0:
      self.active.append(int(self.model.part_active.numpy()))

  def on_epoch_end(self, epoch, logs=None):
    self.logs.append(dict(logs))


class PARTModelTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("zscore",), ("official",), ("soft",))
  def test_part_with_equal_budgets_is_exactly_at(self, rule):
    x, y = _data()
    a, b = _pair_of_classifiers()
    kwargs = dict(epsilon=8 / 255, epsilon_low=8 / 255, step_size=2 / 255,
                  num_steps=3, weight_decay=5e-4, seed=11)
    at = _compile(PARTModel(a, method="at", **kwargs))
    part = _compile(PARTModel(b, method="part", mask_rule=rule, **kwargs))
    part.part_active.assign(1)
    for start in (0, 32):
      batch = (x[start:start + 32], y[start:start + 32])
      log_at = at.train_on_batch(*batch, return_dict=True)
      log_part = part.train_on_batch(*batch, return_dict=True)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(wa, wb)
    self.assertEqual(log_at["loss"], log_part["loss"])
    self.assertEqual(log_part["full_eps_fraction"], 1.0)

  def test_weight_decay_adds_wd_times_w_to_the_gradient(self):
    x, y = _data(32)
    a, b = _pair_of_classifiers()
    old = [w.copy() for w in a.get_weights()]
    lr, wd = 0.1, 0.05
    for classifier, decay in ((a, 0.0), (b, wd)):
      model = PARTModel(classifier, method="at", epsilon=0.1, step_size=0.03,
                        num_steps=1, weight_decay=decay, seed=2)
      model.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=False)
      model.train_on_batch(x, y)
    trainable = {id(v) for v in a.trainable_variables}
    for var, wa, wb, w0 in zip(a.weights, a.get_weights(), b.get_weights(),
                               old):
      expected = -lr * wd * w0 if id(var) in trainable else 0.0 * w0
      self.assertAllClose(wb - wa, expected, atol=1e-6)

  @parameterized.parameters(("zscore",), ("official",), ("soft",))
  def test_train_step_compiles_under_xla(self, rule):
    x, y = _data(32)
    keras.utils.set_random_seed(0)
    model = PARTModel(small_cnn(SHAPE, 4), method="part", epsilon=0.1,
                      epsilon_low=0.02, step_size=0.03, num_steps=2,
                      mask_rule=rule)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    model.part_active.assign(1)
    before = model.get_weights()
    logs = model.train_on_batch(x, y, return_dict=True)
    self.assertTrue(np.isfinite(logs["loss"]))
    self.assertBetween(logs["eps_mean"], 0.021, 0.099)  # reweighted budgets
    self.assertNotAllClose(before[1], model.get_weights()[1])
    # The compiled budget is the eager one (up to ties at the threshold).
    compiled = tf.function(model.budget, jit_compile=True)(tf.constant(x))
    mismatch = np.mean(~np.isclose(compiled, model.budget(tf.constant(x))))
    self.assertLess(mismatch, 0.01)

  def test_mixed_precision_step(self):
    x, y = _data(32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      keras.utils.set_random_seed(0)
      model = _compile(PARTModel(small_cnn(SHAPE, 4), method="part",
                                 epsilon=0.1, epsilon_low=0.02,
                                 step_size=0.03, num_steps=2))
      model.part_active.assign(1)
      self.assertEqual(model.classifier(x).dtype, tf.float32)  # logits
      logs = model.train_on_batch(x, y, return_dict=True)
      eps_map = model.budget(tf.constant(x)).numpy()
      x_adv = model.craft(tf.constant(x), tf.constant(y), eps_map,
                          [0, 1]).numpy()
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertTrue(np.isfinite(logs["loss"]))
    self.assertBetween(logs["full_eps_fraction"], 0.01, 0.99)
    self.assertEqual(x_adv.dtype, np.float32)
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps_map + 1e-6))
    self.assertGreater(np.mean(np.abs(x_adv - x) > 0.5 * eps_map), 0.5)

  def test_mirrored_strategy_step_equals_single_device_step(self):
    # Two logical CPUs must be configured before TensorFlow starts, hence a
    # separate process. With epsilon 0 the AEs are the clean images, so the
    # per-replica loss scaling and the L2 term are all that could differ.
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from part_tf.models import small_cnn
        from part_tf.training import PARTModel
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(32, 8, 8, 1)).astype(np.float32)
        y = rng.integers(0, 3, 32).astype(np.int32)
        keras.utils.set_random_seed(0)
        start = small_cnn((8, 8, 1), 3).get_weights()
        def run(strategy):
          with strategy.scope():
            classifier = small_cnn((8, 8, 1), 3)
            classifier.set_weights(start)
            model = PARTModel(classifier, method="at", epsilon=0.0,
                              epsilon_low=0.0, step_size=0.01, num_steps=1, weight_decay=0.05)
            model.compile(optimizer=keras.optimizers.SGD(0.5),
                          jit_compile=False)
          ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
          model.fit(ds, epochs=1, verbose=0)
          return classifier.get_weights()
        one = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        moved = max(float(np.abs(a - b).max()) for a, b in zip(one, start))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
        print("RESULT", moved, diff)
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    moved, diff = map(float, result.stdout.split("RESULT")[1].split())
    self.assertGreater(moved, 1e-3)
    self.assertLess(diff, 1e-5)

  def test_part_budget_differs_from_at_after_burn_in(self):
    x, y = _data()
    a, b = _pair_of_classifiers()
    kwargs = dict(epsilon=8 / 255, step_size=2 / 255, num_steps=2, seed=1)
    at = _compile(PARTModel(a, method="at", **kwargs))
    part = _compile(PARTModel(b, method="part", epsilon_low=2 / 255, **kwargs))
    part.part_active.assign(1)
    eps_map = part.budget(tf.constant(x)).numpy()
    self.assertAllClose(np.unique(eps_map), [2 / 255, 8 / 255])
    self.assertAllEqual(at.budget(tf.constant(x)), tf.fill(x.shape, 8 / 255))
    x_adv = part.craft(tf.constant(x), tf.constant(y), eps_map, [0, 0]).numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps_map + 1e-6))

  def test_burn_in_switch_flips_at_the_right_epoch_without_retracing(self):
    x, y = _data(64)
    model = _compile(PARTModel(small_cnn(SHAPE, 4), method="part",
                               epsilon=0.1, epsilon_low=0.02, step_size=0.03,
                               num_steps=2))
    traces = []  # Python code in the step runs once per trace.
    budget = model.budget
    model.budget = lambda x: traces.append(1) or budget(x)
    recorder = Recorder()
    model.fit(x, y, batch_size=32, epochs=4, verbose=0,
              callbacks=[BurnInSwitch(2), recorder])
    self.assertEqual(recorder.active, [0, 0, 1, 1])
    self.assertLen(traces, 1)
    fractions = [logs["full_eps_fraction"] for logs in recorder.logs]
    means = [logs["eps_mean"] for logs in recorder.logs]
    self.assertAllClose(fractions[:2], [1.0, 1.0])
    self.assertAllClose(means[:2], [0.1, 0.1])
    for fraction, mean in zip(fractions[2:], means[2:]):
      self.assertLess(fraction, 0.6)
      self.assertLess(mean, 0.1)
      self.assertAllClose(mean, 0.02 + 0.08 * fraction, atol=1e-4)

  def test_switch_and_optimizer_state_survive_a_crash_and_resume(self):
    x, y = _data(64)
    backup = tempfile.mkdtemp()

    def make():
      keras.utils.set_random_seed(0)
      return _compile(PARTModel(small_cnn(SHAPE, 4), method="part",
                                epsilon=0.1, epsilon_low=0.02,
                                step_size=0.03, num_steps=2))

    class Crash(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
          raise RuntimeError("killed")

    first = make()
    with self.assertRaisesRegex(RuntimeError, "killed"):
      first.fit(x, y, batch_size=32, epochs=4, verbose=0,
                callbacks=[BurnInSwitch(1), AtomicBackupAndRestore(backup),
                           Crash()])
    self.assertEqual(read_state(backup)["epoch"], 2)
    self.assertEqual([f for f in os.listdir(backup) if f.endswith(".h5")],
                     ["epoch-0002.weights.h5"])
    second = make()
    self.assertEqual(int(second.part_active.numpy()), 0)
    restore = AtomicBackupAndRestore(backup)
    restore.set_model(second)
    restore.on_train_begin()
    self.assertEqual(int(second.part_active.numpy()), 1)
    self.assertEqual(int(second.optimizer.iterations.numpy()), 4)
    self.assertEqual(second._initial_epoch, 2)
    for wa, wb in zip(first.get_weights(), second.get_weights()):
      self.assertAllEqual(wa, wb)
    for va, vb in zip(first.optimizer.variables, second.optimizer.variables):
      self.assertAllEqual(va, vb)
    recorder = Recorder()
    second.fit(x, y, batch_size=32, epochs=4, verbose=0,
               callbacks=[BurnInSwitch(1), AtomicBackupAndRestore(backup),
                          recorder])
    self.assertEqual(recorder.active, [1, 1])  # epochs 3 and 4 only
    self.assertEqual(read_state(backup)["epoch"], 4)

  def test_corrupt_backup_state_is_a_clear_error(self):
    backup = tempfile.mkdtemp()
    with open(os.path.join(backup, "state.json"), "w") as f:
      f.write("{not json")
    with self.assertRaisesRegex(ValueError, "corrupt backup state"):
      read_state(backup)

  def test_config_round_trip(self):
    model = PARTModel(small_cnn(SHAPE, 4), method="part", epsilon=0.2,
                      epsilon_low=0.1, mask_rule="soft", num_steps=3, seed=5)
    clone = PARTModel.from_config(model.get_config())
    self.assertEqual(clone.get_config()["classifier"]["config"]["name"],
                     "small_cnn")
    for key in ("method", "epsilon", "epsilon_low", "mask_rule", "num_steps",
                "seed"):
      self.assertEqual(getattr(clone, key), getattr(model, key))

  @parameterized.parameters(
      (dict(method="trades_typo"), "unknown method"),
      (dict(epsilon_low=0.5), "epsilon_low <= epsilon"),
      (dict(step_size=0.0), "step_size > 0"),
      (dict(mask_rule="hard"), "unknown mask rule"),
      (dict(cam_layer="missing"), "no layer named 'missing'"))
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      PARTModel(small_cnn(SHAPE, 4), **{"epsilon": 0.1, **kwargs})


if __name__ == "__main__":
  tf.test.main()
