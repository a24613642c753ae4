"""The evaluation suite: reductions, worst case, restarts, sanity checks, and
scripts/evaluate.py on a .keras file and on a SavedModel."""

import json
import os
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import attack_suite
from part_tf import data
from part_tf.export import export_classifier
from part_tf.models import small_cnn
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASIC = ["fgsm", "pgd", "cw", "mma"]


_TRAINED = []


def _trained_model():
  """A small CNN trained for a few hundred steps on the offline digits
  (trained once; the tests only read it)."""
  if _TRAINED:
    return _TRAINED[0]
  keras.utils.set_random_seed(0)
  train, test, spec = data.load("mnist_offline", max_train=2048, max_test=128)
  model = small_cnn(spec.image_shape, 10, mean=spec.mean, std=spec.std)
  model.compile(optimizer=keras.optimizers.Adam(2e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(train.images / 255.0, train.labels, batch_size=64, epochs=2,
            verbose=0)
  _TRAINED.append((model, test))
  return model, test


@pytest.mark.slow
class SuiteTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, cls.test = _trained_model()
    cls.model_fn = staticmethod(lambda x: cls.model(x, training=False))
    cls.ds = data.eval_dataset(cls.test, 64)

  def test_zero_budget_is_natural_accuracy(self):
    report = attack_suite.evaluate(self.model_fn, self.ds, 0.0, BASIC)
    self.assertGreater(report["natural_accuracy"], 0.8)
    for name in BASIC:
      self.assertEqual(report["robust_accuracy"][name],
                       report["natural_accuracy"])
    self.assertEqual(report["worst_case_accuracy"], report["natural_accuracy"])

  def test_worst_case_is_per_example_and(self):
    report = attack_suite.evaluate(self.model_fn, self.ds, 0.15, BASIC,
                                   per_example=True)
    both = np.logical_and.reduce([report["natural"], *report["robust"].values()])
    self.assertAllClose(report["worst_case_accuracy"], both.mean())
    self.assertLessEqual(report["worst_case_accuracy"],
                         min(report["robust_accuracy"].values()))
    for robust in report["robust"].values():
      self.assertFalse(np.any(robust & ~report["natural"]))
    # Iterative attacks beat one step on an undefended model.
    self.assertLess(report["robust_accuracy"]["pgd"],
                    report["robust_accuracy"]["fgsm"])

  def test_full_suite_and_black_box_check(self):
    # Every attack, each at a few iterations: this is the suite's bookkeeping
    # (the attacks' strength is tested in their own files).
    config = attack_suite.SuiteConfig(num_steps=10, apgd_steps=20,
                                      square_queries=100, fab_steps=10,
                                      num_targets=2)
    report = attack_suite.evaluate(self.model_fn, self.ds, 0.1, None, config)
    self.assertCountEqual(report["robust_accuracy"],
                          attack_suite.available_attacks())
    self.assertEqual(report["worst_case_accuracy"],
                     min(report["worst_case_accuracy"],
                         *report["robust_accuracy"].values()))
    # APGD-CE is at least as strong as PGD on an undefended model.
    self.assertLessEqual(report["robust_accuracy"]["apgd_ce"],
                         report["robust_accuracy"]["pgd"] + 0.02)
    checks = {name: ok for name, ok, _ in attack_suite.sanity_checks(
        self.model_fn, self.ds, report, config)}
    self.assertTrue(checks["black_box_weaker"])

  def test_more_restarts_never_raise_robust_accuracy(self):
    accuracies = [attack_suite.evaluate(
        self.model_fn, self.ds, 0.1, ["pgd"],
        attack_suite.SuiteConfig(num_steps=5, restarts=r))["robust_accuracy"]
                  ["pgd"] for r in (1, 3)]
    self.assertLessEqual(accuracies[1], accuracies[0])

  def test_sanity_checks_pass_on_an_honest_model(self):
    config = attack_suite.SuiteConfig(num_steps=10)
    report = attack_suite.evaluate(self.model_fn, self.ds, 0.1, ["pgd"],
                                   config)
    checks = attack_suite.sanity_checks(self.model_fn, self.ds, report, config)
    self.assertEqual([name for name, _, _ in checks],
                     ["large_eps", "more_steps"])
    self.assertTrue(all(ok for _, ok, _ in checks), checks)

  def test_sanity_checks_flag_a_gradient_masked_model(self):
    # Zero gradients everywhere: PGD cannot move beyond its random start.
    masked = lambda x: self.model(tf.stop_gradient(x) + 0.0 * x,
                                  training=False)
    config = attack_suite.SuiteConfig(num_steps=10)
    report = attack_suite.evaluate(masked, self.ds, 0.1, ["pgd"], config)
    checks = dict((name, ok) for name, ok, _ in attack_suite.sanity_checks(
        masked, self.ds, report, config))
    self.assertFalse(checks["large_eps"])

  def test_unknown_attack(self):
    with self.assertRaisesRegex(ValueError, "unknown or unavailable"):
      attack_suite.evaluate(self.model_fn, self.ds, 0.1, ["deepfool"])


@pytest.mark.slow  # evaluate.py runs
class EvaluateScriptTest(tf.test.TestCase):

  def test_keras_file_and_saved_model_give_the_same_report(self):
    model, _ = _trained_model()
    folder = tempfile.mkdtemp()
    keras_file = os.path.join(folder, "model.keras")
    model.save(keras_file)
    export_dir = export_classifier(model, os.path.join(folder, "export", "1"))
    results = []
    for path, out in ((keras_file, "a"), (export_dir, "b")):
      output_dir = os.path.join(folder, out)
      result = commands.run(
          [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
           f"--model_path={path}", "--dataset=mnist_offline",
           "--num_examples=64", "--attacks=fgsm,pgd", "--num_steps=5",
           "--epsilon=0.05,0.2", "--nosanity_checks",
           f"--output_dir={output_dir}"],
          capture_output=True, text=True, timeout=300, cwd=ROOT)
      self.assertEqual(result.returncode, 0, result.stderr[-2000:])
      with open(os.path.join(output_dir, "eval.json")) as f:
        results.append(json.load(f))
      with open(os.path.join(output_dir, "eval.md")) as f:
        self.assertIn("| epsilon | natural | fgsm | pgd | worst case |",
                      f.read())
    a, b = results
    self.assertLen(a["reports"], 2)
    for ra, rb in zip(a["reports"], b["reports"]):
      self.assertAllClose(ra["robust_accuracy"]["pgd"],
                          rb["robust_accuracy"]["pgd"], atol=1 / 64)
      self.assertEqual(ra["num_examples"], 64)
    self.assertGreater(a["reports"][0]["robust_accuracy"]["pgd"],
                       a["reports"][1]["robust_accuracy"]["pgd"])

  def test_bad_model_path(self):
    result = commands.run(
        [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
         "--model_path=/no/such/model"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    self.assertNotEqual(result.returncode, 0)
    self.assertEqual(result.stderr.strip().splitlines(),
                     ["error: flag --model_path=/no/such/model: "
                      "--model_path does not exist"])


class ForeignModelTest(tf.test.TestCase):
  """Models part_tf did not train: other input scalings (`--input_range`,
  `--input_mean/--input_std`) and SavedModels of Keras' `model.export()`."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, _ = _trained_model()
    cls.folder = tempfile.mkdtemp()

  def _evaluate(self, path, **scaling):
    from part_tf import evaluation_report  # pylint: disable=g-import-not-at-top
    request = evaluation_report.Request(
        model_path=path, dataset="mnist_offline", attacks=("pgd",),
        budgets=(0.1,), num_examples=64, sanity_checks=False,
        config=attack_suite.SuiteConfig(num_steps=5), batch_size=32,
        **scaling)
    strategy = tf.distribute.get_strategy()
    loaded = evaluation_report.prepare(request, strategy, writes=False)
    outcome = evaluation_report.run(request, loaded, strategy)
    return outcome.result

  def _wrapped(self, name, to_unit):
    """A .keras model that takes other inputs: `to_unit` maps them back to
    the [0, 1] pixels the trained model takes."""
    inputs = keras.Input(self.model.input_shape[1:])
    wrapped = keras.Model(inputs, self.model(to_unit(inputs)))
    path = os.path.join(self.folder, name)
    wrapped.save(path)
    return path

  def _assert_same(self, a, b):
    ra, rb = a["reports"][0], b["reports"][0]
    self.assertEqual(ra["natural_accuracy"], rb["natural_accuracy"])
    self.assertAllClose(ra["robust_accuracy"]["pgd"],
                        rb["robust_accuracy"]["pgd"], atol=1 / 64)

  def test_input_range_and_normalisation_reach_the_model(self):
    own = os.path.join(self.folder, "own.keras")
    self.model.save(own)
    reference = self._evaluate(own)
    self.assertNotIn("input_scaling", reference)
    pixels = self._wrapped("pixels.keras",
                           keras.layers.Rescaling(1 / 255.0))
    scaled = self._evaluate(pixels, input_range=(0.0, 255.0))
    self._assert_same(reference, scaled)
    self.assertEqual(scaled["input_scaling"]["input_range"], [0.0, 255.0])
    # Without the flag the 0-255 model sees near-black images: the scaling
    # is what makes the numbers agree.
    unscaled = self._evaluate(pixels)
    self.assertLess(unscaled["reports"][0]["natural_accuracy"],
                    reference["reports"][0]["natural_accuracy"] - 0.3)
    normalised = self._wrapped("normalised.keras",
                               keras.layers.Rescaling(0.25, offset=0.5))
    self._assert_same(reference, self._evaluate(
        normalised, input_mean=(0.5,), input_std=(0.25,)))

  def test_keras_export_saved_model_is_evaluated_like_its_keras_file(self):
    own = os.path.join(self.folder, "own2.keras")
    self.model.save(own)
    exported = os.path.join(self.folder, "keras_export")
    self.model.export(exported, verbose=False)
    self._assert_same(self._evaluate(own), self._evaluate(exported))
    pixels = self._wrapped("pixels2.keras", keras.layers.Rescaling(1 / 255.0))
    keras.models.load_model(pixels).export(
        os.path.join(self.folder, "pixels_export"), verbose=False)
    self._assert_same(self._evaluate(own), self._evaluate(
        os.path.join(self.folder, "pixels_export"),
        input_range=(0.0, 255.0)))

  def test_saved_models_the_attacks_cannot_use_are_one_line_errors(self):
    from part_tf import evaluation_report  # pylint: disable=g-import-not-at-top
    module = tf.Module()
    module.f = tf.function(
        lambda images: {"a": tf.reduce_mean(tf.cast(images, tf.float32),
                                             [1, 2]),
                        "b": tf.reduce_max(tf.cast(images, tf.float32),
                                           [1, 2])})
    for name, dtype, message in (
        ("uint8", tf.uint8, "takes uint8 images: the attacks need "
         "gradients"),
        ("two_outputs", tf.float32, "several outputs and none is named "
         "logits: a float32[None, 1], b float32[None, 1]")):
      path = os.path.join(self.folder, name)
      signature = module.f.get_concrete_function(
          tf.TensorSpec([None, 28, 28, 1], dtype, name="images"))
      tf.saved_model.save(module, path, signatures=signature)
      with self.assertRaises(ValueError) as caught:
        evaluation_report.load_model(path)
      self.assertIn(f"cannot load the SavedModel {path}: ",
                    str(caught.exception))
      self.assertIn(message, str(caught.exception))
      self.assertNotIn("\n", str(caught.exception))
    with self.assertRaisesRegex(ValueError, "input_range must go up"):
      evaluation_report.input_scaling((1.0, 0.0))


if __name__ == "__main__":
  tf.test.main()
