"""PARTModel: reduction to AT, burn-in counted by the model (over several
fits and resumes), the CAM layer found, config (and earlier configs)."""

import json
import os
import re
import sys
import tempfile
import textwrap
import warnings

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import methods
from part_tf import regularisers
from part_tf.models import CAM_LAYER
from part_tf.models import small_cnn
from part_tf.training import BurnInSwitch
from part_tf.training import PARTModel
from part_tf.training.checkpointing import AtomicBackupAndRestore
from part_tf.training.checkpointing import read_state
from tests import commands

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
  """Records the model's `epoch` during each epoch's first batch, and epoch
  logs."""

  def __init__(self):
    super().__init__()
    self.epochs, self.logs = [], []

  def on_train_batch_end(self, batch, logs=None):
    if batch == 0:
      self.epochs.append(int(self.model.epoch.numpy()))

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
    part = _compile(PARTModel(b, method="part", mask_rule=rule,
                              burn_in_epochs=0, **kwargs))
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
                      mask_rule=rule, burn_in_epochs=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
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
                                 step_size=0.03, num_steps=2,
                                 burn_in_epochs=0))
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
    result = commands.run([sys.executable, "-c", code], capture_output=True,
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
    part = _compile(PARTModel(b, method="part", epsilon_low=2 / 255,
                              burn_in_epochs=0, **kwargs))
    eps_map = part.budget(tf.constant(x)).numpy()
    self.assertAllClose(np.unique(eps_map), [2 / 255, 8 / 255])
    self.assertAllEqual(at.budget(tf.constant(x)), tf.fill(x.shape, 8 / 255))
    x_adv = part.craft(tf.constant(x), tf.constant(y), eps_map, [0, 0]).numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps_map + 1e-6))

  def _assert_budgets(self, logs, cam):
    """The epoch `logs` of a model with epsilon 0.1 and epsilon_low 0.02
    used the uniform budget (`cam` False) or the CAM budgets."""
    fraction, mean = logs["full_eps_fraction"], logs["eps_mean"]
    if not cam:
      self.assertAllClose([fraction, mean], [1.0, 0.1])
    else:
      self.assertBetween(fraction, 0.01, 0.6)
      self.assertLess(mean, 0.1)
      self.assertAllClose(mean, 0.02 + 0.08 * fraction, atol=1e-4)

  def _part(self, burn_in_epochs=1, **kwargs):
    keras.utils.set_random_seed(0)
    return _compile(PARTModel(small_cnn(SHAPE, 4), method="part",
                              epsilon=0.1, epsilon_low=0.02, step_size=0.03,
                              num_steps=2, burn_in_epochs=burn_in_epochs,
                              **kwargs))

  def test_fit_switches_the_budgets_after_burn_in_without_retracing(self):
    x, y = _data(64)
    model = self._part(burn_in_epochs=2)
    traces = []  # Python code in the step runs once per trace.
    budget = model.budget
    model.budget = lambda x: traces.append(1) or budget(x)
    recorder = Recorder()
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[recorder])
    self.assertEqual(recorder.epochs, [0, 1, 2, 3])
    self.assertEqual(int(model.epoch.numpy()), 4)
    self.assertLen(traces, 1)
    for epoch, logs in enumerate(recorder.logs):
      self._assert_budgets(logs, cam=epoch >= 2)

  def test_plain_fit_uses_cam_budgets_after_burn_in(self):
    # No callback: the model counts its epochs itself.
    x, y = _data(64)
    model = self._part()
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # no burn-in warning: epoch 2 is PART
      history = model.fit(x, y, epochs=2, verbose=0).history
    self._assert_budgets({k: v[0] for k, v in history.items()}, cam=False)
    self._assert_budgets({k: v[1] for k, v in history.items()}, cam=True)

  def test_two_fits_of_one_epoch_count_on(self):
    x, y = _data(64)
    model = self._part()
    with self.assertWarnsRegex(UserWarning, "inside burn-in"):
      first = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    self._assert_budgets({k: v[0] for k, v in first.items()}, cam=False)
    self.assertEqual(int(model.epoch.numpy()), 1)
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # this fit trains epoch 2: PART
      second = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    self._assert_budgets({k: v[0] for k, v in second.items()}, cam=True)
    self.assertEqual(int(model.epoch.numpy()), 2)
    # The same two epochs as one fit of two (same step seeds and optimiser
    # state: the same weights).
    once = self._part()
    once.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    again = self._part()
    for _ in range(2):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        again.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for wa, wb in zip(once.get_weights(), again.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_resume_from_saved_weights(self):
    x, y = _data(64)
    path = os.path.join(tempfile.mkdtemp(), "part.weights.h5")
    first = self._part()
    with self.assertWarnsRegex(UserWarning, "inside burn-in"):
      first.fit(x, y, batch_size=32, epochs=1, verbose=0)
    first.save_weights(path)
    resumed = self._part()
    self.assertEqual(int(resumed.epoch.numpy()), 0)
    resumed.load_weights(path)
    self.assertEqual(int(resumed.epoch.numpy()), 1)  # saved with the weights
    recorder = Recorder()
    history = resumed.fit(x, y, batch_size=32, epochs=2, initial_epoch=1,
                          verbose=0, callbacks=[recorder]).history
    self.assertEqual(recorder.epochs, [1])
    self._assert_budgets({k: v[0] for k, v in history.items()}, cam=True)

  @parameterized.parameters(("part", 3, 3, True), ("part_t", 2, 1, True),
                            ("part", 2, 3, False), ("at", 5, 3, False),
                            ("part", 0, 1, False))
  def test_warning_when_the_whole_fit_is_burn_in(self, method, burn_in,
                                                 epochs, warns):
    x, y = _data(32)
    model = _compile(PARTModel(small_cnn(SHAPE, 4), method=method,
                               epsilon=0.1, epsilon_low=0.02, step_size=0.03,
                               num_steps=1, burn_in_epochs=burn_in))
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    messages = [str(w.message) for w in caught
                if "burn-in" in str(w.message)]
    if warns:
      self.assertLen(messages, 1)
      self.assertIn(f"PARTModel(method={method!r}) with burn_in_epochs="
                    f"{burn_in}", messages[0])
      self.assertNotIn("\n", messages[0])
    else:
      self.assertEmpty(messages)

  def test_deprecated_burn_in_switch_still_switches_and_warns(self):
    x, y = _data(64)
    model = self._part(burn_in_epochs=None)  # the default: 20
    reference = self._part(burn_in_epochs=2)
    recorder = Recorder()
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0,
                callbacks=[BurnInSwitch(2), recorder])
    deprecations = [w for w in caught
                    if issubclass(w.category, DeprecationWarning)]
    self.assertLen(deprecations, 1)
    self.assertIn("BurnInSwitch is deprecated", str(deprecations[0].message))
    # It sets the model's burn-in before the first step: no warning that
    # the fit lies inside the default burn-in of 20 epochs.
    self.assertEmpty([w for w in caught if "burn-in" in str(w.message)])
    self.assertEqual(model.burn_in_epochs, 2)
    for epoch, logs in enumerate(recorder.logs):
      self._assert_budgets(logs, cam=epoch >= 2)
    reference.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    for wa, wb in zip(model.get_weights(), reference.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_epoch_and_optimizer_state_survive_a_crash_and_resume(self):
    x, y = _data(64)
    backup = tempfile.mkdtemp()

    def make():
      keras.utils.set_random_seed(0)
      return _compile(PARTModel(small_cnn(SHAPE, 4), method="part",
                                epsilon=0.1, epsilon_low=0.02,
                                step_size=0.03, num_steps=2,
                                burn_in_epochs=1))

    class Crash(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
          raise RuntimeError("killed")

    first = make()
    with self.assertRaisesRegex(RuntimeError, "killed"):
      first.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0,
                callbacks=[AtomicBackupAndRestore(backup), Crash()])
    self.assertEqual(read_state(backup)["epoch"], 2)
    self.assertEqual([f for f in os.listdir(backup) if f.endswith(".h5")],
                     ["epoch-0002.weights.h5"])
    second = make()
    self.assertEqual(int(second.epoch.numpy()), 0)
    restore = AtomicBackupAndRestore(backup)
    restore.set_model(second)
    restore.on_train_begin()
    self.assertEqual(int(second.epoch.numpy()), 2)
    self.assertEqual(int(second.optimizer.iterations.numpy()), 4)
    self.assertEqual(second._initial_epoch, 2)
    for wa, wb in zip(first.get_weights(), second.get_weights()):
      self.assertAllEqual(wa, wb)
    for va, vb in zip(first.optimizer.variables, second.optimizer.variables):
      self.assertAllEqual(va, vb)
    recorder = Recorder()
    second.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0,
               callbacks=[AtomicBackupAndRestore(backup), recorder])
    self.assertEqual(recorder.epochs, [2, 3])  # epochs 3 and 4 only
    for logs in recorder.logs:
      self._assert_budgets(logs, cam=True)
    self.assertEqual(read_state(backup)["epoch"], 4)
    # The same weights as a run that was not killed.
    uninterrupted = make()
    uninterrupted.fit(x, y, batch_size=32, epochs=4, shuffle=False,
                      verbose=0)
    for wa, wb in zip(uninterrupted.get_weights(), second.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_corrupt_backup_state_is_a_clear_error(self):
    backup = tempfile.mkdtemp()
    with open(os.path.join(backup, "state.json"), "w") as f:
      f.write("{not json")
    with self.assertRaisesRegex(ValueError, "corrupt backup state"):
      read_state(backup)

  def _full_model(self):
    """A PART-T model with every kind of setting away from its default."""
    keras.utils.set_random_seed(6)
    return PARTModel(
        small_cnn(SHAPE, 4), method=methods.PartT(beta=3.0, clean_passes=2),
        regularisers=[regularisers.Consistency(weight=0.5, temperature=0.7),
                      regularisers.CenterLoss(weight=0.01, lr=0.3)],
        epsilon=0.2, epsilon_low=0.1, burn_in_epochs=4, step_size=0.05,
        num_steps=3, attack="mma", cam="layercam", mask_rule="soft",
        weight_decay=1e-3, seed=5, name="part_t_model")

  def _assert_same_settings(self, a, b):
    self.assertEqual(a.method, b.method)
    self.assertEqual(a.regularisers, b.regularisers)
    for key in ("epsilon", "epsilon_low", "burn_in_epochs", "step_size",
                "num_steps", "cam", "mask_rule", "cam_layer", "reweighted",
                "weight_decay", "seed", "name"):
      self.assertEqual(getattr(a, key), getattr(b, key), key)
    self.assertEqual(a.attack_config, b.attack_config)
    self.assertEqual([(layer.name, layer.output.shape)
                      for layer in a.classifier.layers],
                     [(layer.name, layer.output.shape)
                      for layer in b.classifier.layers])

  def test_config_round_trip(self):
    model = self._full_model()
    config = model.get_config()
    json.dumps(config)  # JSON-able, as a .keras file stores it
    clone = PARTModel.from_config(config)
    self.assertEqual(config, model.get_config())  # from_config keeps it
    self.assertEqual(clone.get_config()["classifier"]["config"]["name"],
                     "small_cnn")
    self._assert_same_settings(clone, model)
    self.assertEqual(json.dumps(clone.get_config(), sort_keys=True),
                     json.dumps(config, sort_keys=True))
    self.assertEqual(clone.method, methods.PartT(beta=3.0, clean_passes=2))
    self.assertEqual(clone.center_loss.centres.shape, (4, 128))

  def test_saved_and_loaded_as_a_keras_file(self):
    model = self._full_model()
    model.center_loss.centres.assign(
        np.random.default_rng(0).normal(size=(4, 128)))
    model.epoch.assign(3)
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertIsInstance(loaded, PARTModel)
    self._assert_same_settings(loaded, model)
    for wa, wb in zip(model.get_weights(), loaded.get_weights()):
      self.assertAllEqual(wa, wb)
    self.assertEqual(int(loaded.epoch.numpy()), 3)

  @parameterized.parameters(True, False)
  def test_config_of_an_earlier_version_loads(self, with_clean_passes):
    # The flat config PARTModel.get_config wrote before the configs (issue
    # #21); `trades_clean_passes` from #23 on.
    model = self._full_model()
    old = {
        "classifier": keras.saving.serialize_keras_object(model.classifier),
        "method": "part_t", "epsilon": 0.2, "epsilon_low": 0.1,
        "step_size": 0.05, "num_steps": 3, "cam": "layercam",
        "mask_rule": "soft", "cam_layer": CAM_LAYER, "weight_decay": 1e-3,
        "seed": 5, "beta": 3.0, "attack": "mma", "natural_classifier": None,
        "act_alpha": 0.9, "act_beta": 0.9, "act_temperature": 4.0,
        "consistency_weight": 0.5, "consistency_temperature": 0.7,
        "feature_alignment_weight": 0.0, "center_loss_weight": 0.01,
        "center_lr": 0.3, "feature_layer": None, "name": "part_t_model"}
    if with_clean_passes:
      old["trades_clean_passes"] = 2
    loaded = PARTModel.from_config(old)
    # Those configs had no burn-in (a callback switched the budgets): the
    # default.
    expected = PARTModel(
        keras.saving.deserialize_keras_object(old["classifier"]),
        method=methods.PartT(beta=3.0,
                             clean_passes=2 if with_clean_passes else 1),
        regularisers=model.regularisers, epsilon=0.2, epsilon_low=0.1,
        step_size=0.05, num_steps=3, attack="mma", cam="layercam",
        mask_rule="soft", weight_decay=1e-3, seed=5, name="part_t_model")
    self._assert_same_settings(loaded, expected)
    self.assertEqual(loaded.burn_in_epochs, 20)
    # The same training step, bit for bit.
    x, y = _data(8)
    views = np.stack([x, x[:, ::-1]], axis=1)
    for m in (loaded, expected):
      m.classifier.set_weights(model.classifier.get_weights())
      m.epoch.assign(20)
      _compile(m).train_on_batch(views, y)
    for wa, wb in zip(loaded.get_weights(), expected.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_act_config_of_an_earlier_version_loads(self):
    keras.utils.set_random_seed(6)
    robust, natural = small_cnn(SHAPE, 4), small_cnn(SHAPE, 4)
    old = {
        "classifier": keras.saving.serialize_keras_object(robust),
        "method": "part_act", "epsilon": 0.1, "epsilon_low": 0.05,
        "step_size": 0.02, "num_steps": 2, "cam": "gradcam",
        "mask_rule": "zscore", "cam_layer": CAM_LAYER, "weight_decay": 0.0,
        "seed": 1, "beta": 6.0, "attack": "pgd",
        "natural_classifier": keras.saving.serialize_keras_object(natural),
        "act_alpha": 0.7, "act_beta": 0.4, "act_temperature": 3.0,
        "consistency_weight": 0.0, "consistency_temperature": 0.5,
        "feature_alignment_weight": 0.2, "center_loss_weight": 0.0,
        "center_lr": 0.5, "feature_layer": "fc1", "trades_clean_passes": 1,
        "name": "act_model"}
    loaded = PARTModel.from_config(old)
    self.assertEqual(loaded.method, methods.PartACT(alpha=0.7, beta=0.4,
                                                    temperature=3.0))
    self.assertEqual(loaded.regularisers, (regularisers.FeatureAlignment(
        weight=0.2, layer="fc1"),))
    self.assertEqual(loaded.natural_classifier.output_shape, (None, 4))
    self.assertEqual((loaded.epsilon, loaded.epsilon_low, loaded.cam,
                      loaded.cam_layer, loaded.seed, loaded.name),
                     (0.1, 0.05, "gradcam", CAM_LAYER, 1, "act_model"))

  @pytest.mark.slow
  def test_cam_layer_found_in_a_keras_application(self):
    # MobileNetV2 names no CAM layer: the last layer with a spatial output
    # is taken. At 32x32 its maps are 1x1 (constant CAMs): a warning names
    # the last layer with larger maps.
    keras.utils.set_random_seed(1)
    network = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), weights=None, classes=10,
        classifier_activation=None)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, 4).astype(np.int32)
    settings = dict(method="part", epsilon=0.1, epsilon_low=0.02,
                    step_size=0.03, num_steps=1, burn_in_epochs=0)
    with self.assertWarnsRegex(UserWarning, "has 1x1 maps") as caught:
      model = _compile(PARTModel(network, **settings))
    self.assertEqual(model.cam_layer, "out_relu")
    message = str(caught.warning)
    self.assertNotIn("\n", message)
    larger = re.search(r"pass cam_layer='(\w+)'", message).group(1)
    layer = network.get_layer(larger)
    self.assertNotIsInstance(layer, keras.layers.ZeroPadding2D)
    self.assertGreater(layer.output.shape[1] * layer.output.shape[2], 1)
    # It trains, with the uniform budget the 1x1 maps give ...
    before = network.get_weights()
    logs = model.train_on_batch(x, y, return_dict=True)
    self.assertTrue(np.isfinite(logs["loss"]))
    self.assertAllClose(logs["eps_mean"], 0.1)
    self.assertNotAllClose(before[0], network.get_weights()[0])
    # ... and with CAM budgets at the layer the warning names.
    with warnings.catch_warnings():
      warnings.simplefilter("error", UserWarning)
      model = _compile(PARTModel(network, cam_layer=larger, **settings))
    logs = model.train_on_batch(x, y, return_dict=True)
    self.assertBetween(logs["full_eps_fraction"], 0.01, 0.99)
    self.assertAllClose(logs["eps_mean"],
                        0.02 + 0.08 * logs["full_eps_fraction"], atol=1e-5)

  def test_a_model_without_spatial_layers_is_a_clear_error(self):
    inputs = keras.Input(SHAPE)
    flat = keras.Model(inputs, keras.layers.Dense(4)(
        keras.layers.Flatten()(inputs)), name="flat")
    with self.assertRaisesRegex(ValueError, r"^model 'flat' has no layer "
                                r"with a spatial \(4-D\) output to take class "
                                r"activation maps at: name one with "
                                r"cam_layer$"):
      PARTModel(flat, method="part")
    # A base method needs no CAMs.
    self.assertIsNone(PARTModel(flat, method="at").cam_layer)

  @parameterized.parameters(
      (dict(method="trades_typo"), "^unknown method 'trades_typo'; choose "
       "one of at, part, trades, part_t, mart, part_m, act, part_act"),
      (dict(epsilon_low=0.5), r"^epsilon_low \(0.5\) must not be larger "
       r"than epsilon \(0.1\)$"),
      (dict(step_size=0.0), r"^step_size must be > 0, got 0.0$"),
      (dict(num_steps=0), r"^num_steps must be >= 1, got 0$"),
      (dict(burn_in_epochs=-1), r"^burn_in_epochs must be >= 0, got -1$"),
      (dict(mask_rule="hard"), "^mask_rule must be one of zscore, official, "
       "soft, got 'hard'$"),
      (dict(cam_layer="missing"), "^model 'small_cnn' has no layer named "
       "'missing'"))
  def test_bad_arguments(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      PARTModel(small_cnn(SHAPE, 4), **{"epsilon": 0.1, **kwargs})

  def test_misspelt_argument_is_refused_by_name(self):
    # keras.Model would ignore it: the budget would silently stay 7/255.
    with self.assertRaisesRegex(TypeError, r"^PARTModel got an unexpected "
                                r"keyword argument 'epsilon_lo'; did you mean "
                                r"'epsilon_low'\?$"):
      PARTModel(small_cnn(SHAPE, 4), epsilon=0.1, epsilon_lo=0.05)
    with self.assertRaisesRegex(TypeError, "'colour'$"):
      PARTModel(small_cnn(SHAPE, 4), colour="red")
    model = PARTModel(small_cnn(SHAPE, 4), epsilon=0.1, name="mine",
                      trainable=True)
    self.assertEqual(model.name, "mine")


if __name__ == "__main__":
  tf.test.main()
