"""PGD evaluation: reductions, agreement with cleverhans, the callback."""

import json
import os
import shutil
import sys
import tempfile

from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import evaluation
from part_tf.training import robust_evaluation
from part_tf.models import small_cnn
from tests import commands
from tests.tiny_runs import TINY_TRAIN


def _setup():
  keras.utils.set_random_seed(5)
  model = small_cnn((10, 10, 1), 3)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(40, 10, 10, 1)).astype(np.float32)
  y = np.argmax(model(x).numpy(), -1)  # all correct at first
  y[:10] = (y[:10] + 1) % 3            # and ten wrong
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  return model, x, y, ds


class EvaluationTest(tf.test.TestCase):

  def test_zero_budget_is_natural_accuracy(self):
    model, _, _, ds = _setup()
    result = evaluation.robust_accuracy(model, ds, 0.0, 0.01, num_steps=3)
    self.assertEqual(result["num_examples"], 40)
    self.assertAllClose(result["natural_accuracy"], 0.75)
    self.assertAllClose(result["pgd_accuracy"], 0.75)

  def test_matches_cleverhans_robust_accuracy(self):
    model, x, y, ds = _setup()
    ours = evaluation.robust_accuracy(model, ds, 0.05, 0.0125, num_steps=10,
                                      random_start=False)
    x_adv = projected_gradient_descent(
        model, tf.constant(x), 0.05, 0.0125, 10, np.inf, clip_min=0.0,
        clip_max=1.0, y=tf.constant(y), rand_init=False, sanity_checks=False)
    theirs = np.mean(np.argmax(model(x_adv).numpy(), -1) == y)
    self.assertAllClose(ours["pgd_accuracy"], theirs)
    self.assertLess(ours["pgd_accuracy"], ours["natural_accuracy"])

  def test_huge_budget_breaks_the_model(self):
    model, _, _, ds = _setup()
    result = evaluation.robust_accuracy(model, ds, 1.0, 0.25, num_steps=10)
    self.assertLessEqual(result["pgd_accuracy"], 0.1)

  def test_callback_logs_every_n_epochs_and_last(self):
    model, x, y, ds = _setup()
    holder = keras.Model(model.inputs, model.outputs)
    holder.classifier = model
    callback = robust_evaluation.RobustEvaluation(ds, 2, 0.0, 0.01,
                                                  num_steps=1)
    callback.set_model(holder)
    callback.set_params({"epochs": 5})
    logged = []
    for epoch in range(5):
      logs = {}
      callback.on_epoch_end(epoch, logs)
      logged.append(logs["val_pgd_accuracy"])
    self.assertTrue(np.isnan(logged[0]) and np.isnan(logged[2]))
    self.assertAllClose([logged[1], logged[3], logged[4]], [0.75] * 3)
    del x, y



@pytest.mark.slow
class OverdesignedBudgetTest(tf.test.TestCase):
  """Training at a larger epsilon than the one evaluated (--eval_epsilon)."""

  def test_run_and_evaluate_py_use_the_evaluation_budget(self):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, model_dir)
    train = commands.run(
        [sys.executable, os.path.join(root, "scripts", "train.py"),
         *TINY_TRAIN, "--epsilon=0.12", "--eval_epsilon=0.1", "--epochs=1",
         "--burn_in_epochs=0", "--method=at", "--image_count=0",
         "--noexport", f"--model_dir={model_dir}"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(train.returncode, 0, train.stderr[-2000:])
    with open(os.path.join(model_dir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertEqual((metrics["epsilon"], metrics["train_epsilon"]),
                     (0.1, 0.12))
    self.assertAllClose(metrics["eval_step_size"], 0.025)
    evaluate = commands.run(
        [sys.executable, os.path.join(root, "scripts", "evaluate.py"),
         f"--model_path={model_dir}", "--attacks=fgsm", "--num_examples=16",
         "--nosanity_checks"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(evaluate.returncode, 0, evaluate.stderr[-2000:])
    with open(os.path.join(model_dir, "eval.json")) as f:
      self.assertEqual(json.load(f)["reports"][0]["epsilon"], 0.1)


if __name__ == "__main__":
  tf.test.main()
