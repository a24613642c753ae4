"""The evaluation suite: reductions, worst case, restarts, sanity checks, and
scripts/evaluate.py on a .keras file and on a SavedModel."""

import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from part_tf import attack_suite
from part_tf import data
from part_tf.export import export_classifier
from part_tf.models import small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASIC = ["fgsm", "pgd", "cw", "mma"]


def _trained_model():
  """A small CNN trained for a few hundred steps on the offline digits."""
  keras.utils.set_random_seed(0)
  train, test, spec = data.load("mnist_offline", max_train=2048, max_test=128)
  model = small_cnn(spec.image_shape, 10, mean=spec.mean, std=spec.std)
  model.compile(optimizer=keras.optimizers.Adam(2e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(train.images / 255.0, train.labels, batch_size=64, epochs=2,
            verbose=0)
  return model, test


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
    config = attack_suite.SuiteConfig(num_steps=10, apgd_steps=20,
                                      square_queries=100)
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
      result = subprocess.run(
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
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
         "--model_path=/no/such/model"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    self.assertNotEqual(result.returncode, 0)
    self.assertEqual(result.stderr.strip().splitlines(),
                     ["error: flag --model_path=/no/such/model: "
                      "--model_path does not exist"])


if __name__ == "__main__":
  tf.test.main()
