"""PARTModel takes every input `model.fit` accepts, as any Keras model does.

The batch dimension is unknown when the step is traced for NumPy arrays, a
`tf.data` pipeline whose last batch is partial, a Python generator and a
`keras.utils.PyDataset`; all of them must train the same model as the
fixed-shape step. Sample and class weights are honoured in the loss; wrong
inputs are rejected with a message that names the problem.
"""

import os
import sys
import textwrap

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf.models import small_cnn
from part_tf.training import BurnInSwitch
from part_tf.training import PARTModel
from tests import commands

SHAPE = (12, 12, 3)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, BATCH = 22, 8  # batches of 8, 8 and a partial 6


def _data(n=N, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(size=(n, *SHAPE)).astype(np.float32),
          rng.integers(0, 4, n).astype(np.int32))


def _model(method="part", jit_compile=False, **kwargs):
  """A small PARTModel: the uniform budget in its first epoch, the CAM
  budgets from the second (`fit` switches them itself)."""
  keras.utils.set_random_seed(7)
  model = PARTModel(small_cnn(SHAPE, 4), method=method,
                    **{"epsilon": 0.1, "epsilon_low": 0.03, "step_size": 0.03,
                       "num_steps": 2, "seed": 1, "burn_in_epochs": 1,
                       **kwargs})
  model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                jit_compile=jit_compile)
  return model


def _generator(x, y):
  """Endless, as Keras expects of a generator given `steps_per_epoch`."""
  while True:
    for start in range(0, len(y), BATCH):
      yield x[start:start + BATCH], y[start:start + BATCH]


class _Batches(keras.utils.PyDataset):

  def __init__(self, x, y):
    super().__init__()
    self.x, self.y = x, y

  def __len__(self):
    return -(-len(self.y) // BATCH)

  def __getitem__(self, index):
    part = slice(index * BATCH, (index + 1) * BATCH)
    return self.x[part], self.y[part]


def _fit(model, kind, x, y, epochs=2):
  """Plain `model.fit`, no callbacks: the model switches its budgets."""
  if kind == "numpy":
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                     verbose=0)
  if kind == "tf_data":
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    return model.fit(ds, epochs=epochs, verbose=0)
  if kind == "generator":
    return model.fit(_generator(x, y), steps_per_epoch=-(-len(y) // BATCH),
                     epochs=epochs, verbose=0)
  if kind == "py_dataset":  # Keras shuffles the batch order unless told not to
    return model.fit(_Batches(x, y), epochs=epochs, shuffle=False,
                     verbose=0)
  raise ValueError(kind)


def _fixed_shape_reference(x, y, epochs=2, **kwargs):
  """The same training as `_fit`, one `train_on_batch` per batch: each step
  is traced for its exact batch shape, and the epoch (which switches the
  budgets after burn-in) is set by hand."""
  model = _model(**kwargs)
  for epoch in range(epochs):
    model.epoch.assign(epoch)
    for start in range(0, len(y), BATCH):
      model.train_on_batch(x[start:start + BATCH], y[start:start + BATCH])
  model.epoch.assign(epochs)  # `fit` counts the epochs it finished
  return model


@pytest.mark.slow
class InputKindsTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.x, cls.y = _data()
    cls.reference = _fixed_shape_reference(cls.x, cls.y).get_weights()

  @parameterized.parameters("numpy", "tf_data", "generator", "py_dataset")
  def test_trains_exactly_like_the_fixed_shape_step(self, kind):
    model = _model()
    history = _fit(model, kind, self.x, self.y)
    logs = {k: v[-1] for k, v in history.history.items()}
    # The second epoch used CAM budgets, on the partial batch too.
    self.assertBetween(logs["full_eps_fraction"], 0.01, 0.6)
    self.assertAllClose(logs["eps_mean"],
                        0.03 + 0.07 * logs["full_eps_fraction"], atol=1e-5)
    for got, want in zip(model.get_weights(), self.reference):
      self.assertAllClose(got, want, atol=1e-6, rtol=1e-6)

  def test_epoch_metrics_weigh_every_example_once(self):
    # With a zero learning rate and zero budgets, the epoch's adv_accuracy is
    # the natural accuracy over all 22 examples, not a mean of batch means.
    model = _model(epsilon=0.0, epsilon_low=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(self.x, self.y, batch_size=BATCH, epochs=1,
                        shuffle=False, verbose=0)
    predicted = np.argmax(model.predict(self.x, batch_size=5, verbose=0), -1)
    expected = np.mean(predicted == self.y)
    self.assertAllClose(history.history["adv_accuracy"][0], expected)
    logits = model.predict(self.x, verbose=0)
    ce = -tf.nn.log_softmax(logits).numpy()[np.arange(N), self.y]
    self.assertAllClose(history.history["loss"][0], ce.mean(), rtol=1e-5)

  def test_batch_of_one(self):
    # batch_size=1 on 3 examples: 3 steps of one image each, per epoch.
    model = _model()
    history = model.fit(self.x[:3], self.y[:3], batch_size=1, epochs=2,
                        shuffle=False, verbose=0)
    reference = _model()
    for epoch in range(2):
      reference.epoch.assign(epoch)
      for i in range(3):
        reference.train_on_batch(self.x[i:i + 1], self.y[i:i + 1])
    reference.epoch.assign(2)  # `fit` counts the epochs it finished
    for got, want in zip(model.get_weights(), reference.get_weights()):
      self.assertAllClose(got, want, atol=1e-6, rtol=1e-6)
    self.assertBetween(history.history["full_eps_fraction"][-1], 0.01, 0.6)

  def test_validation_data_evaluate_and_predict(self):
    model = _model()
    x_val, y_val = _data(13, seed=1)
    history = model.fit(self.x, self.y, batch_size=BATCH, epochs=2,
                        validation_data=(x_val, y_val), verbose=0)
    logits = model.predict(x_val, batch_size=5, verbose=0)
    self.assertEqual(logits.shape, (13, 4))
    self.assertAllClose(logits, model.classifier(x_val), atol=1e-5)
    accuracy = np.mean(np.argmax(logits, -1) == y_val)
    self.assertAllClose(history.history["val_accuracy"][-1], accuracy)
    result = model.evaluate(x_val, y_val, batch_size=5, verbose=0,
                            return_dict=True)
    self.assertEqual(set(result), {"loss", "accuracy"})
    self.assertAllClose(result["accuracy"], accuracy)
    ce = -tf.nn.log_softmax(logits).numpy()[np.arange(13), y_val]
    self.assertAllClose(result["loss"], ce.mean(), rtol=1e-5)

  def test_labels_of_shape_batch_by_one(self):
    # keras.datasets.cifar10.load_data() gives labels of shape (N, 1).
    model = _model()
    _fit(model, "numpy", self.x, self.y[:, None])
    for got, want in zip(model.get_weights(), self.reference):
      self.assertAllClose(got, want, atol=1e-6, rtol=1e-6)

  def test_xla_with_a_partial_batch(self):
    # XLA's stateless random numbers differ from the CPU kernels', so the
    # reference is the fixed-shape step under XLA too.
    model = _model(jit_compile=True)
    history = _fit(model, "numpy", self.x, self.y)
    self.assertBetween(history.history["full_eps_fraction"][-1], 0.01, 0.6)
    reference = _fixed_shape_reference(self.x, self.y, jit_compile=True)
    for got, want in zip(model.get_weights(), reference.get_weights()):
      self.assertAllClose(got, want, atol=1e-5, rtol=1e-5)


class WeightsTest(tf.test.TestCase, parameterized.TestCase):
  """Sample and class weights scale each example's loss (Keras' reduction:
  sum(w * loss) / batch size)."""

  @parameterized.parameters("part", "part_t", "part_m")
  def test_unit_weights_change_nothing(self, method):
    x, y = _data()
    plain, weighted = _model(method), _model(method)
    _fit(plain, "numpy", x, y)
    weighted.fit(x, y, sample_weight=np.ones(N, np.float32),
                 batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(plain.get_weights(), weighted.get_weights()):
      self.assertAllEqual(a, b)

  def test_sample_weight_is_the_weighted_loss(self):
    # Zero budgets make the AEs the clean images, so the step is plain SGD:
    # weights 0 on the odd examples equal training on the even ones with the
    # learning rate scaled by (number kept / batch size).
    x, y = _data(8)
    weights = np.tile([1.0, 0.0], 4).astype(np.float32)
    kwargs = dict(method="at", epsilon=0.0, epsilon_low=0.0)
    weighted, kept = _model(**kwargs), _model(**kwargs)
    weighted.compile(optimizer=keras.optimizers.SGD(0.1))
    kept.compile(optimizer=keras.optimizers.SGD(0.1 * 4 / 8))
    logs = weighted.train_on_batch(x, y, sample_weight=weights,
                                   return_dict=True)
    kept.train_on_batch(x[::2], y[::2])
    for a, b in zip(weighted.get_weights(), kept.get_weights()):
      self.assertAllClose(a, b, atol=1e-6)
    self.assertNotAllClose(weighted.classifier.get_weights()[0],
                           _model().classifier.get_weights()[0])
    # The logged loss is Keras' sum(w * loss) / batch size.
    logits = _model(**kwargs).classifier(x)
    ce = -tf.nn.log_softmax(logits).numpy()[np.arange(8), y]
    self.assertAllClose(logs["loss"], np.sum(weights * ce) / 8, rtol=1e-5)

  def test_class_weight_equals_the_sample_weight_it_implies(self):
    x, y = _data()
    class_weight = {0: 2.0, 1: 0.5, 2: 1.0, 3: 0.0}
    by_class, by_sample = _model(), _model()
    by_class.fit(x, y, class_weight=class_weight, batch_size=BATCH,
                 epochs=2, shuffle=False, verbose=0)
    by_sample.fit(x, y, sample_weight=np.array([class_weight[c] for c in y],
                                               np.float32),
                  batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(by_class.get_weights(), by_sample.get_weights()):
      self.assertAllEqual(a, b)
    plain = _model()
    _fit(plain, "numpy", x, y)
    self.assertNotAllClose(plain.classifier.get_weights()[0],
                           by_class.classifier.get_weights()[0])

  def test_tf_data_with_sample_weights(self):
    x, y = _data()
    w = np.linspace(0.0, 2.0, N).astype(np.float32)
    from_arrays, from_data = _model(), _model()
    from_arrays.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=2,
                    shuffle=False, verbose=0)
    from_data.fit(tf.data.Dataset.from_tensor_slices((x, y, w)).batch(BATCH),
                  epochs=2, verbose=0)
    for a, b in zip(from_arrays.get_weights(), from_data.get_weights()):
      self.assertAllEqual(a, b)

  def test_weighted_evaluation(self):
    x, y = _data()
    w = np.linspace(0.0, 2.0, N).astype(np.float32)
    model = _model()
    result = model.evaluate(x, y, sample_weight=w, batch_size=BATCH,
                            verbose=0, return_dict=True)
    correct = np.argmax(model.predict(x, verbose=0), -1) == y
    self.assertAllClose(result["accuracy"], np.sum(w * correct) / np.sum(w))

  def test_class_weight_with_a_generator_is_refused_by_keras(self):
    x, y = _data()
    with self.assertRaisesRegex(ValueError, "class_weight"):
      _model().fit(_generator(x, y), steps_per_epoch=1,
                   class_weight={0: 1.0}, verbose=0)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("uint8_images", lambda x, y: ((x * 255).astype(np.uint8), y),
       "needs float images with values in \\[0, 1\\], got uint8"),
      ("wrong_image_size", lambda x, y: (x[:, :10, :10], y),
       "do not fit the classifier's input shape \\(None, 12, 12, 3\\)"),
      ("one_hot_labels", lambda x, y: (x, np.eye(4, dtype=np.float32)[y]),
       "labels must be integer class indices .* np.argmax"),
  )
  def test_clear_error(self, change, message):
    x, y = change(*_data())
    with self.assertRaisesRegex(ValueError, message):
      _model().fit(x, y, batch_size=BATCH, verbose=0)

  def test_images_without_labels(self):
    x, _ = _data()
    with self.assertRaisesRegex(ValueError, "labelled batches"):
      _model().fit(x, batch_size=BATCH, verbose=0)

  def test_burn_in_switch_on_a_plain_model(self):
    x, y = _data()
    model = small_cnn(SHAPE, 4)
    model.compile(optimizer="sgd", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    with self.assertRaisesRegex(ValueError, "switches the budgets of a part_tf.training.PARTModel"):
      model.fit(x, y, epochs=1, verbose=0, callbacks=[BurnInSwitch(1)])


@pytest.mark.slow
class MirroredTest(tf.test.TestCase, parameterized.TestCase):
  """Under MirroredStrategy a partial global batch splits into replicas of
  unequal size, or leaves a replica with no example at all."""

  def _run(self, n, norm, budget=False):
    """Trains in a separate process: two logical CPUs must be configured
    before TensorFlow starts. Zero budgets make the AEs the clean images, so
    the runs are comparable, while the CAMs still run on every replica."""
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from part_tf.training import PARTModel
        rng = np.random.default_rng(0)
        x = rng.uniform(size=({n}, 8, 8, 3)).astype(np.float32)
        y = rng.integers(0, 3, {n}).astype(np.int32)

        def classifier():
          inputs = keras.Input((8, 8, 3))
          h = keras.layers.Conv2D(6, 3, padding="same")(inputs)
          if "{norm}" != "none":
            h = keras.layers.BatchNormalization(
                synchronized="{norm}" == "sync")(h)
          h = keras.layers.ReLU(name="cam_features")(h)
          h = keras.layers.GlobalAveragePooling2D()(h)
          return keras.Model(inputs, keras.layers.Dense(3)(h))

        keras.utils.set_random_seed(0)
        start = classifier().get_weights()

        def run(strategy, epsilon, method):
          with strategy.scope():
            model = PARTModel(classifier(), method=method, epsilon=epsilon,
                              epsilon_low=epsilon / 2, step_size=0.02,
                              num_steps=2, weight_decay=0.01,
                              burn_in_epochs=1)
            model.classifier.set_weights(start)
            model.compile(optimizer=keras.optimizers.SGD(0.5),
                          jit_compile=False)
          history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False,
                              verbose=0)
          logs = {{k: v[-1] for k, v in history.history.items()}}
          # Partial batches in evaluation and prediction too.
          logs.update(model.evaluate(x, y, batch_size=16, verbose=0,
                                     return_dict=True))
          logits = model.predict(x, batch_size=16, verbose=0)
          assert logits.shape == (len(x), 3), logits.shape
          logs["logits"] = float(np.abs(logits).mean())
          return model.classifier.get_weights(), logs

        one = tf.distribute.OneDeviceStrategy("/cpu:0")
        two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        for method in ("part", "part_t"):
          w1, logs1 = run(one, 0.0, method)
          w2, logs2 = run(two, 0.0, method)
          diff = max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))
          moved = max(float(np.abs(a - b).max()) for a, b in zip(w1, start))
          print("RESULT", method, moved, diff,
                max(abs(logs1[k] - logs2[k]) for k in logs1))
        if {budget}:
          w, logs = run(two, 0.1, "part_m")
          print("BUDGET", all(np.isfinite(v).all() for v in w),
                logs["full_eps_fraction"], logs["eps_mean"])
        """)
    result = commands.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    lines = [line.split() for line in result.stdout.splitlines()]
    results = {line[1]: [float(v) for v in line[2:]]
               for line in lines if line[0] == "RESULT"}
    self.assertEqual(set(results), {"part", "part_t"})
    if budget:
      (_, finite, fraction, mean), = [l for l in lines if l[0] == "BUDGET"]
      # With real budgets every weight (batch-norm statistics too) is finite
      # and the CAM budgets were on in the second epoch.
      self.assertEqual(finite, "True")
      self.assertBetween(float(fraction), 0.01, 0.6)
      self.assertAllClose(float(mean), 0.05 + 0.05 * float(fraction),
                          atol=1e-5)
    return results

  @parameterized.parameters(
      (35, "sync"),   # last batch 3: replicas of 2 and 1, batch norm synced
      (33, "none"),   # last batch 1: replicas of 1 and 0
  )
  def test_partial_global_batch_equals_the_single_device_run(self, n, norm):
    # (The run with real budgets: once, on replicas of 2 and 1.)
    for moved, diff, log_diff in self._run(n, norm,
                                           budget=n == 35).values():
      self.assertGreater(moved, 1e-3)
      self.assertLess(diff, 1e-5)
      self.assertLess(log_diff, 1e-5)

  @parameterized.parameters(("sync",), ("local",))
  def test_an_empty_replica_with_batch_norm_trains(self, norm):
    # Plain Keras fails here: convolutions and batch norm cannot run on an
    # empty batch. The empty replica's stand-in example has weight 0.
    for moved, _, log_diff in self._run(33, norm).values():
      self.assertGreater(moved, 1e-3)
      self.assertTrue(np.isfinite(log_diff))  # finite logs on both runs


if __name__ == "__main__":
  tf.test.main()
