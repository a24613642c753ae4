"""Plug-in regularisers: each term against a numpy version of its paper's
formula, one training step against the step written out by hand, weight 0
bit-identical to the method without it, and the two-view input."""

import json
import os
import sys
import textwrap

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import attacks
from part_tf import data
from part_tf import experiment
from part_tf import regularisers
from part_tf import run_settings
from part_tf.config import TrainConfig
from part_tf.models import small_cnn
from part_tf.training import PARTModel
from part_tf.training import forward
from tests import commands
from tests import tiny_runs
from tests.fakes import FixedOutputs

SHAPE = (12, 12, 3)
KINDS = {"consistency": regularisers.Consistency,
         "feature_alignment": regularisers.FeatureAlignment,
         "center_loss": regularisers.CenterLoss}


def _data(n=16, seed=0, views=1):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, *SHAPE)).astype(np.float32)
  if views > 1:  # a second "augmentation": shifted by one pixel
    x = np.stack([x, np.roll(x, 1, axis=2)], axis=1)
  return x, rng.integers(0, 4, n).astype(np.int32)


def _softmax(z, t=1.0):
  z = z / t
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _entropy(p):
  return -(p * np.log(p)).sum(-1)


class TermTest(tf.test.TestCase):
  """Each term on fixed logits and features."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(3)
    self.a = rng.normal(size=(8, 5)).astype(np.float32) * 2
    self.b = rng.normal(size=(8, 5)).astype(np.float32) * 2
    self.fa = rng.normal(size=(8, 6)).astype(np.float32)
    self.fb = rng.normal(size=(8, 6)).astype(np.float32)
    self.y = np.array([0, 1, 1, 2, 2, 2, 4, 0], np.int32)

  def test_jensen_shannon_is_the_entropy_form(self):
    # JS(p1, p2) = H(m) - (H(p1) + H(p2)) / 2: another way to write it.
    for t in (0.5, 1.0, 2.0):
      p1, p2 = _softmax(self.a, t), _softmax(self.b, t)
      expected = _entropy((p1 + p2) / 2) - (_entropy(p1) + _entropy(p2)) / 2
      self.assertAllClose(regularisers.jensen_shannon(self.a, self.b, t),
                          expected, rtol=1e-5, atol=1e-6)
    self.assertAllClose(regularisers.jensen_shannon(self.a, self.a, 0.5),
                        np.zeros(8), atol=1e-6)

  def test_consistency_pairs_the_two_halves(self):
    out = FixedOutputs(adv=np.concatenate([self.a, self.b]))
    term = regularisers.Consistency(temperature=0.5).term(
        out, np.tile(self.y, 2))
    p1, p2 = _softmax(self.a, 0.5), _softmax(self.b, 0.5)
    js = _entropy((p1 + p2) / 2) - (_entropy(p1) + _entropy(p2)) / 2
    self.assertAllClose(term, np.concatenate([js, js]), rtol=1e-5, atol=1e-6)

  def test_feature_alignment(self):
    out = FixedOutputs(clean_features=self.fa, adv_features=self.fb)
    self.assertAllClose(
        regularisers.FeatureAlignment(weight=1.0).term(out, self.y),
        ((self.fa - self.fb) ** 2).sum(-1), rtol=1e-5)

  def test_center_loss_and_wen_update(self):
    centre_loss = regularisers.CenterLoss(lr=0.5)
    state = centre_loss.build(5, 6)
    self.assertAllEqual(state.centres, np.zeros((5, 6)))
    start = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    state.centres.assign(start)
    out = FixedOutputs(adv_features=self.fb)
    self.assertAllClose(centre_loss.term(out, self.y, state),
                        0.5 * ((self.fb - start[self.y]) ** 2).sum(-1),
                        rtol=1e-5)
    weights = np.ones(8, np.float32)
    weights[-1] = 0  # a stand-in example does not move the centres
    weights[3] = 0.5  # a sample weight weighs the example's part
    centre_loss.update(out, tf.constant(self.y), tf.constant(weights), state)
    expected = start.copy()
    for j in range(5):
      rows = [i for i in range(8) if self.y[i] == j]
      delta = sum((weights[i] * (start[j] - self.fb[i]) for i in rows),
                  np.zeros(6)) / (1 + sum(weights[i] for i in rows))
      expected[j] = start[j] - 0.5 * delta
    self.assertAllClose(state.centres, expected, rtol=1e-5, atol=1e-6)
    self.assertAllEqual(state.centres.numpy()[3], start[3])  # no 3s


class HandWrittenStepTest(tf.test.TestCase, parameterized.TestCase):
  """Two SGD steps of AT + regulariser equal the same steps written out."""

  @parameterized.parameters("consistency", "feature_alignment",
                            "center_loss")
  def test_two_steps(self, kind):
    weight, lr = 0.7, 0.1
    views = 2 if kind == "consistency" else 1
    x, y = _data(views=views)
    keras.utils.set_random_seed(5)
    classifier = small_cnn(SHAPE, 4)
    twin = keras.models.clone_model(classifier)
    twin.set_weights(classifier.get_weights())
    model = PARTModel(classifier, method="at", epsilon=0.1, epsilon_low=0.1,
                      step_size=0.03, num_steps=2, seed=1,
                      regularisers=[KINDS[kind](weight=weight)])
    model.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=False)
    features = keras.Model(twin.inputs, twin.get_layer("fc1").output)
    centres = np.zeros((4, 128), np.float32)
    for start in (0, 8):
      xb, yb = x[start:start + 8], y[start:start + 8]
      if views > 1:  # the batch the model trains on: all first views first
        xb, yb = np.concatenate([xb[:, 0], xb[:, 1]]), np.tile(yb, 2)
      x_adv = model.craft(tf.constant(xb), tf.constant(yb),
                          tf.fill(xb.shape, 0.1), model.step_seed())
      with tf.GradientTape() as tape:
        logits = twin(x_adv, training=True)
        per_example = attacks.cross_entropy(logits, yb)
        if kind == "consistency":
          p1, p2 = tf.split(tf.nn.softmax(logits / 0.5), 2)
          m = (p1 + p2) / 2
          h = lambda p: -tf.reduce_sum(p * tf.math.log(p), -1)
          js = h(m) - (h(p1) + h(p2)) / 2
          term = tf.concat([js, js], 0)
        elif kind == "feature_alignment":
          term = tf.reduce_sum(tf.square(features(xb) - features(x_adv)), -1)
        else:
          adv_features = features(x_adv)
          term = 0.5 * tf.reduce_sum(
              tf.square(adv_features - tf.gather(centres, yb)), -1)
        loss = tf.reduce_mean(per_example + weight * term)
      grads = tape.gradient(loss, twin.trainable_variables)
      for v, g in zip(twin.trainable_variables, grads):
        v.assign_sub(lr * g)
      if kind == "center_loss":
        f = adv_features.numpy()
        for j in range(4):
          rows = yb == j
          centres[j] -= 0.5 * (rows.sum() * centres[j] - f[rows].sum(0)) / (
              1 + rows.sum())
      logs = model.train_on_batch(x[start:start + 8], y[start:start + 8],
                                  return_dict=True)
      self.assertAllClose(logs["loss"], loss, rtol=1e-5)
      for wa, wb in zip(classifier.get_weights(), twin.get_weights()):
        self.assertAllClose(wa, wb, rtol=1e-4, atol=1e-6)
      if kind == "center_loss":
        self.assertAllClose(model.center_loss.centres, centres, atol=1e-5)


class WeightZeroTest(tf.test.TestCase, parameterized.TestCase):
  """Weight 0 is the method without the regulariser, bit for bit."""

  @parameterized.product(kind=tuple(KINDS), method=("at", "part_t", "mart"))
  def test_weight_zero_is_the_method(self, kind, method):
    x, y = _data()
    runs = []
    for weight in (None, 0.0, 0.5):
      keras.utils.set_random_seed(2)
      classifier = small_cnn(SHAPE, 4)
      added = [] if weight is None else [KINDS[kind](weight=weight)]
      model = PARTModel(classifier, method=method, epsilon=0.1,
                        epsilon_low=0.05, step_size=0.03, num_steps=2,
                        seed=1, burn_in_epochs=0, regularisers=added)
      model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                    jit_compile=False)
      xs = x if weight != 0.5 or kind != "consistency" else np.stack(
          [x, x[:, ::-1]], axis=1)
      logs = [model.train_on_batch(xs[s:s + 8], y[s:s + 8], return_dict=True)
              for s in (0, 8)]
      runs.append((classifier.get_weights(), logs))
    (w_none, logs_none), (w_zero, logs_zero), (w_on, _) = runs
    self.assertEqual(logs_none, logs_zero)
    for wa, wb in zip(w_none, w_zero):
      self.assertAllEqual(wa, wb)
    self.assertNotAllClose(w_none[-2], w_on[-2])  # and the weight matters


@pytest.mark.slow
class InputTest(tf.test.TestCase):

  def test_two_views_from_the_input_pipeline(self):
    train, _, spec = data.load("mnist_offline", max_train=64, max_test=8)
    one = next(iter(data.train_dataset(train, spec, 16, seed=0,
                                       start_epoch=0, epochs=1)))
    two = next(iter(data.train_dataset(train, spec, 16, seed=0,
                                       start_epoch=0, epochs=1, views=2)))
    self.assertEqual(two[0].shape, (16, 2, 28, 28, 1))
    self.assertAllEqual(two[0][:, 0], one[0])  # view 1 is the usual batch
    self.assertAllEqual(two[1], one[1])
    self.assertNotAllClose(two[0][:, 0], two[0][:, 1])  # view 2 differs

  def test_randaugment_views_from_the_input_pipeline(self):
    rng = np.random.default_rng(0)
    train = data.ArrayData(
        rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8),
        rng.integers(0, 10, 64).astype(np.int64))
    spec = data.resolve_spec("cifar10")
    batches = lambda start, views="randaugment": [
        b for b in data.train_dataset(train, spec, 16, seed=0,
                                      start_epoch=start, epochs=2, views=2,
                                      view_augmentation=views)]
    run = batches(0)
    self.assertEqual(run[0][0].shape, (16, 2, 32, 32, 3))
    # A run resumed at epoch 1 sees the batches of the uninterrupted run.
    for (x_run, y_run), (x_resumed, y_resumed) in zip(run[4:], batches(1)):
      self.assertAllEqual(x_run, x_resumed)
      self.assertAllEqual(y_run, y_resumed)
    crop_flip = batches(0, "crop_flip")
    for (x, y), (x_plain, y_plain) in zip(run, crop_flip):
      self.assertAllEqual(y, y_plain)
      self.assertNotAllClose(x[:, 0], x[:, 1])
      self.assertNotAllClose(x, x_plain)
      # Cutout: each view has a block of black pixels.
      black = tf.reduce_all(tf.equal(x, 0.0), axis=-1)
      self.assertAllGreaterEqual(
          tf.reduce_sum(tf.cast(black, tf.int32), axis=[2, 3]), 64)
    with self.assertRaisesRegex(ValueError, "unknown view augmentation "
                                "'autoaugment'"):
      batches(0, "autoaugment")

  def test_paper_views_train_end_to_end(self):
    # train.py on mock CIFAR-10 with PART-T, the reference's clean passes
    # and mask rule, and consistency on RandAugment views.
    model_dir = os.path.join(self.get_temp_dir(), "randaugment_run")
    result = tiny_runs.train_on_mock_tfds(
        ["--dataset=cifar10", "--model=small_cnn", "--method=part_t",
         "--mask_rule=official", "--consistency_weight=1",
         "--consistency_views=randaugment", "--epochs=2",
         "--burn_in_epochs=1", "--num_steps=1", "--batch_size=32",
         "--max_train_examples=64", "--max_test_examples=32",
         "--eval_num_steps=1", "--image_count=0", "--noexport",
         f"--model_dir={model_dir}"], num_examples=64)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["consistency_views"],
                      config["trades_clean_passes"]), ("randaugment", 2))
    with open(os.path.join(model_dir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertBetween(metrics["natural_accuracy"], 0.0, 1.0)

  def test_views_augmentation_needs_consistency(self):
    folder = os.path.join(self.get_temp_dir(), "views_alone")
    with self.assertRaisesRegex(ValueError, "^consistency_views=randaugment "
                                "augments consistency regularisation's views: "
                                "it needs consistency_weight > 0$"):
      experiment.train(TrainConfig.from_flat(
          {"model_dir": folder, "consistency_views": "randaugment"}))
    self.assertFalse(os.path.exists(folder))
    # A config.json written before #23 resumes with crop + flip views.
    today = run_settings.settings(TrainConfig.from_flat(
        {"model_dir": "run", "consistency_weight": 1.0}))
    self.assertEqual(today["consistency_views"], "crop_flip")
    older = dict(today)
    del older["consistency_views"]
    run_settings.upgrade(older)
    # A resume compares the settings today's run records.
    self.assertEqual({k: older.get(k) for k in today}, today)

  def test_one_view_where_two_are_needed_is_a_clear_error(self):
    model = PARTModel(small_cnn(SHAPE, 4), method="at",
                      regularisers=[regularisers.Consistency(weight=1.0)])
    model.compile(optimizer="sgd", jit_compile=False)
    x, y = _data()
    with self.assertRaisesRegex(ValueError, "2 augmented views of each "
                                "example: images of shape"):
      model.fit(x, y, batch_size=8, epochs=1, verbose=0)

  def test_consistency_needs_augmented_data(self):
    # SVHN is trained without augmentation: its two views would be equal.
    for dataset, augment, message in (
        ("svhn_cropped", True, "consistency_weight compares two "
         "augmentations of each image, but svhn_cropped is trained without "
         "augmentation"),
        ("mnist_offline", False, "consistency_weight needs augment: its two "
         "views are two augmentations of each image")):
      folder = os.path.join(self.get_temp_dir(), f"{dataset}{augment}")
      with self.assertRaisesRegex(ValueError, f"^{message}"):
        experiment.train(TrainConfig.from_flat(
            {"model_dir": folder, "dataset": dataset, "augment": augment,
             "consistency_weight": 1.0}))
      self.assertFalse(os.path.exists(folder))  # nothing written

  def test_feature_layer_is_the_penultimate_one_by_default(self):
    self.assertEqual(forward.penultimate_layer(small_cnn(SHAPE, 4)), "fc1")
    for kind in ("feature_alignment", "center_loss"):
      with self.assertRaisesRegex(ValueError, "no layer 'nope'"):
        PARTModel(small_cnn(SHAPE, 4), method="at",
                  regularisers=[KINDS[kind](weight=1.0, layer="nope")])


@pytest.mark.slow
class MirroredTest(tf.test.TestCase):
  """ACT with consistency and the centre loss over two replicas equals one
  device: a partial last batch splits 3/2 between the replicas, or 1/0
  (a replica without examples), and the global mean and the centre update
  (summed over replicas) must still hold."""

  def test_two_replicas_equal_one_device(self):
    # Two logical CPUs must be configured before TensorFlow starts: a
    # process of its own. A zero budget makes the AEs the clean images, so
    # the replicas' own random starts do not matter.
    code = textwrap.dedent("""
        import json
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from part_tf.models import small_cnn
        from part_tf.regularisers import CenterLoss, Consistency
        from part_tf.training import PARTModel
        rng = np.random.default_rng(0)

        def run(strategy, n):
          x = rng.uniform(size=(n, 2, 12, 12, 3)).astype(np.float32)
          y = rng.integers(0, 4, n).astype(np.int32)
          with strategy.scope():
            keras.utils.set_random_seed(0)
            robust, natural = small_cnn((12, 12, 3), 4), small_cnn(
                (12, 12, 3), 4)
            model = PARTModel(robust, method="act",
                              natural_classifier=natural, epsilon=0.0,
                              epsilon_low=0.0, step_size=0.01, num_steps=1,
                              regularisers=[Consistency(weight=1.0),
                                            CenterLoss(weight=0.1)])
            model.compile(optimizer=keras.optimizers.SGD(0.1),
                          jit_compile=False)
          logs = model.fit(x, y, batch_size=8, epochs=2, shuffle=False,
                           verbose=0).history
          return {"robust": [w.tolist() for w in robust.get_weights()],
                  "natural": [w.tolist() for w in natural.get_weights()],
                  "centres": model.center_loss.centres.numpy().tolist(),
                  "loss": logs["loss"]}

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        results = {}
        for n in (13, 9):
          rng = np.random.default_rng(n)
          one = run(tf.distribute.OneDeviceStrategy("/cpu:0"), n)
          rng = np.random.default_rng(n)
          results[n] = {"one": one, "two": run(mirrored, n)}
        print(json.dumps(results))
        """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = commands.run([sys.executable, "-c", code], cwd=root,
                          capture_output=True, text=True, timeout=600,
                          check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for runs in results.values():
      one, two = runs["one"], runs["two"]
      self.assertAllClose(one["loss"], two["loss"], rtol=1e-5)
      self.assertGreater(np.abs(np.array(one["centres"])).sum(), 0.1)
      self.assertAllClose(one["centres"], two["centres"], atol=1e-5)
      for name in ("robust", "natural"):
        for wa, wb in zip(one[name], two[name]):
          self.assertAllClose(wa, wb, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
