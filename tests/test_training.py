"""End to end on the offline MNIST sample: training works, a run is exactly
reproducible and resumable, and the exported SavedModel serves the same model.
"""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from part_tf import data
from part_tf import experiment
from part_tf import run_folder
from part_tf import run_settings
from part_tf.config import TrainConfig
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUICK = dict(dataset="mnist_offline", max_train_examples=2048,
             max_test_examples=256, model="small_cnn", method="part",
             epsilon=0.1, epsilon_low=0.07, step_size=0.025, num_steps=3,
             epochs=3, burn_in_epochs=1, batch_size=128, optimizer="adam",
             learning_rate=1e-3, weight_decay=0.0, lr_schedule="constant",
             eval_num_steps=5, eval_subset=128, eval_every=1, seed=3)


# For what needs a run but not a trained model: 2 steps, 1-step PGD.
SMALL = {**QUICK, "max_train_examples": 256, "max_test_examples": 64,
         "eval_subset": 64, "num_steps": 1, "image_count": 0, "export": False}


def _config(model_dir, **settings) -> TrainConfig:
  """A run's config from flat settings (the flags' names)."""
  return TrainConfig.from_flat({"model_dir": model_dir, **settings})


def _epochs_logged(model_dir):
  with open(os.path.join(model_dir, "log.csv")) as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
class EndToEndTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.full_dir = os.path.join(cls.root, "full")
    cls.full = experiment.train(
        _config(cls.full_dir, **QUICK))

  @classmethod
  def tearDownClass(cls):
    # experiment.train turns on TF's process-wide op determinism, under which
    # XLA cannot compile MaxPool gradients: switch it off again so that the
    # tests that follow in this process see TensorFlow's default.
    tf_config.disable_op_determinism()
    super().tearDownClass()

  def test_training_lifts_accuracy_well_above_chance(self):
    self.assertGreater(self.full["natural_accuracy"], 0.7)
    self.assertGreater(self.full["pgd5_accuracy"], 0.3)
    self.assertLess(self.full["pgd5_accuracy"], self.full["natural_accuracy"])
    self.assertEqual(self.full["num_test_examples"], 256)

  def test_log_shows_burn_in_then_reweighted_budgets(self):
    with open(os.path.join(self.full_dir, "log.csv")) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([int(r["epoch"]) for r in rows], [0, 1, 2])
    self.assertAllClose(float(rows[0]["full_eps_fraction"]), 1.0)
    for row in rows[1:]:
      self.assertBetween(float(row["full_eps_fraction"]), 0.01, 0.5)
      self.assertBetween(float(row["eps_mean"]), 0.07, 0.1)
    robust = [float(r["val_pgd_accuracy"]) for r in rows]
    for value in robust:
      self.assertBetween(value, 0.0, 1.0)
    # The best-robust checkpoint is the epoch with the highest PGD accuracy
    # (the later one on a tie).
    best = self.full["best"]
    self.assertEqual(best["val_pgd_accuracy"], max(robust))
    self.assertEqual(best["epoch"], len(robust) - int(np.argmax(robust[::-1])))
    self.assertEqual(
        sorted(os.listdir(os.path.join(self.full_dir, "best"))),
        sorted(["best.json", f"best-epoch-{best['epoch']:04d}.weights.h5"]))
    self.assertBetween(best["natural_accuracy"], 0.5, 1.0)

  def test_killed_run_resumes_to_exactly_the_same_model(self):
    # Stop after 2 of 3 epochs (as a kill after epoch 2 would), then run the
    # same command again: same metrics and weights as the uninterrupted run.
    model_dir = os.path.join(self.root, "resumed")
    first = experiment.train(_config(model_dir, **{**QUICK, "epochs": 2}))
    self.assertEqual(first["resumed_at_epoch"], 0)
    resumed = experiment.train(
        _config(model_dir, **QUICK))
    self.assertEqual(resumed["resumed_at_epoch"], 2)
    self.assertEqual(_epochs_logged(model_dir), [0, 1, 2])
    for key in ("natural_accuracy", "pgd5_accuracy", "best"):
      self.assertEqual(resumed[key], self.full[key])
    a = keras.saving.load_model(os.path.join(self.full_dir, "classifier.keras"))
    b = keras.saving.load_model(os.path.join(model_dir, "classifier.keras"))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_running_a_finished_run_again_gives_the_same_model(self):
    model_dir = os.path.join(self.root, "again")
    config = _config(model_dir, **{**SMALL, "epochs": 1,
                                   "burn_in_epochs": 0})
    first = experiment.train(config)
    again = experiment.train(config)
    self.assertEqual(again["resumed_at_epoch"], 1)
    for key in ("natural_accuracy", "pgd5_accuracy"):
      self.assertEqual(again[key], first[key])
    self.assertEqual(_epochs_logged(model_dir), [0])

  def test_a_start_that_failed_does_not_bind_the_folder(self):
    model_dir = os.path.join(self.root, "failed")
    with self.assertRaisesRegex(ValueError, "no layer named 'nope'"):
      experiment.train(_config(model_dir, **{**SMALL, "cam_layer": "nope"}))
    metrics = experiment.train(_config(model_dir, **{
        **SMALL, "epochs": 1, "burn_in_epochs": 0}))
    self.assertEqual(metrics["epochs"], 1)

  def test_log_rows_past_the_backup_are_dropped_on_resume(self):
    path = os.path.join(tempfile.mkdtemp(), "log.csv")
    with open(path, "w") as f:
      f.write("epoch,loss\n0,1.0\n1,0.5\n2,0.4\n")
    run_folder.RunFolder(os.path.dirname(path)).drop_log_rows_from(2)
    with open(path) as f:
      self.assertEqual(f.read(), "epoch,loss\n0,1.0\n1,0.5\n")

  def test_resume_with_other_settings_is_refused(self):
    config = _config(self.full_dir, **{**QUICK, "epsilon_low": 0.05})
    with self.assertRaisesRegex(ValueError, "epsilon_low: 0.07 -> 0.05"):
      experiment.train(config)

  def test_export_serves_the_trained_classifier(self):
    classifier = keras.saving.load_model(
        os.path.join(self.full_dir, "classifier.keras"))
    self.assertEqual(os.listdir(os.path.join(self.full_dir, "export")), ["3"])
    serving = tf.saved_model.load(os.path.join(self.full_dir, "export", "3"))
    _, test, _ = data.load("mnist_offline", max_test=64)
    x = test.images.astype(np.float32) / 255.0
    out = serving.signatures["serving_default"](images=tf.constant(x))
    self.assertAllClose(out["logits"], classifier(x), atol=1e-4, rtol=1e-5)
    out8 = serving.signatures["serving_uint8"](images=tf.constant(test.images))
    self.assertAllEqual(out8["classes"], out["classes"])
    accuracy = np.mean(out["classes"].numpy() == test.labels)
    self.assertGreater(accuracy, 0.7)

  def test_metrics_json_and_config(self):
    with open(os.path.join(self.full_dir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertEqual(metrics, json.loads(json.dumps(self.full)))
    with open(os.path.join(self.full_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual(config["epsilon_low"], 0.07)
    self.assertFalse([n for n in os.listdir(self.full_dir)
                      if n.startswith(".tmp-")])


# Seconds-long runs: 2 steps per epoch, 1-step PGD, a tiny evaluation.
TINY = dict(dataset="mnist_offline", max_train_examples=128,
            max_test_examples=32, model="small_cnn", method="part",
            epsilon=0.1, epsilon_low=0.07, step_size=0.025, num_steps=1,
            burn_in_epochs=1, batch_size=64, optimizer="adam",
            learning_rate=1e-3, weight_decay=0.0, lr_schedule="constant",
            eval_num_steps=1, eval_subset=32, image_count=0, export=False)


def _log_rows(model_dir):
  with open(os.path.join(model_dir, "log.csv"), newline="") as f:
    return list(csv.reader(f))


@pytest.mark.slow
class LearningRateTest(tf.test.TestCase):
  """The rate of every epoch in log.csv, the reference schedule through a
  resume, and logs of runs from before the column."""

  def tearDown(self):
    tf_config.disable_op_determinism()
    super().tearDown()

  def test_reference_schedule_is_logged_and_continues_after_a_resume(self):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    settings = {**TINY, "epochs": 4, "lr_schedule": "reference",
                "lr_decay_epochs": (1, 3)}
    experiment.train(_config(model_dir, **{**settings, "epochs": 2}))
    metrics = experiment.train(_config(model_dir, **settings))
    self.assertEqual(metrics["resumed_at_epoch"], 2)
    with open(os.path.join(model_dir, "log.csv")) as f:
      rows = list(csv.DictReader(f))
    # Burn-in at 1e-3; PART epochs 1, 2 (>= 1): 1e-4; 3 (>= 3): 1e-5.
    self.assertEqual([float(r["learning_rate"]) for r in rows],
                     [1e-3, 1e-4, 1e-4, 1e-5])

  def test_a_log_without_the_column_keeps_its_columns_on_resume(self):
    # A run of an older version has no learning_rate column, and Keras'
    # CSVLogger appends without a header: its resumed rows must not gain
    # a column that the header lacks.
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    experiment.train(_config(model_dir, **{**TINY, "epochs": 1,
                                           "burn_in_epochs": 0}))
    header, *rows = _log_rows(model_dir)
    self.assertIn("learning_rate", header)  # a new run logs it
    column = header.index("learning_rate")
    old = [[v for i, v in enumerate(r) if i != column]
           for r in [header, *rows]]
    with open(os.path.join(model_dir, "log.csv"), "w", newline="") as f:
      csv.writer(f).writerows(old)
    experiment.train(_config(model_dir, **{**TINY, "epochs": 2,
                                           "burn_in_epochs": 0}))
    header, *rows = _log_rows(model_dir)
    self.assertEqual(header, old[0])
    self.assertLen(rows, 2)
    for row in rows:
      self.assertLen(row, len(header))
    self.assertEqual(_epochs_logged(model_dir), [0, 1])


@pytest.mark.slow
class OlderRunsTest(tf.test.TestCase):
  """Run folders of settings version 1 resume as what they were."""

  def tearDown(self):
    tf_config.disable_op_determinism()
    super().tearDown()

  def test_a_resnet18_run_of_version_1_resumes_as_preact_resnet18(self):
    # A run trained with the pre-activation network, its config.json as
    # version 1 wrote it ("model": "resnet18", no settings_version).
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    # (AT and batches of 8 images: the network is what is checked, and a
    # ResNet's CAM step is the slow part of compiling it.)
    settings = {**TINY, "model": "preact_resnet18", "burn_in_epochs": 0,
                "method": "at", "max_train_examples": 16, "batch_size": 8,
                "max_test_examples": 8, "eval_subset": 8}
    experiment.train(_config(model_dir, **{**settings, "epochs": 1}))
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
      config = json.load(f)
    del config["settings_version"]
    config["model"] = "resnet18"
    with open(path, "w") as f:
      json.dump(config, f)
    # The same settings with today's resnet18 would build another network.
    with self.assertRaisesRegex(
        ValueError, "model: 'preact_resnet18' -> 'resnet18'"):
      experiment.train(_config(model_dir, **{**settings, "model": "resnet18",
                                  "epochs": 2}))
    metrics = experiment.train(_config(model_dir, **{**settings, "epochs": 2}))
    self.assertEqual(metrics["resumed_at_epoch"], 1)
    classifier = keras.saving.load_model(
        os.path.join(model_dir, "classifier.keras"))
    self.assertEqual(classifier.name, "preact_resnet18")
    self.assertIn("final_bn", [layer.name for layer in classifier.layers])
    with open(path) as f:
      self.assertEqual(json.load(f)["settings_version"],
                       run_settings.SETTINGS_VERSION)

  def test_version_1_settings_are_read_as_what_they_built(self):
    base = {"dataset": "cifar10", "model": "resnet18", "mean": None,
            "std": None, "cam_layer": "cam_features",
            "dataset_spec": {"image_shape": [32, 32, 3], "num_classes": 10,
                             "mean": [0.4914, 0.4822, 0.4465],
                             "std": [0.247, 0.2435, 0.2616]}}
    old = json.loads(json.dumps(base))
    run_settings.upgrade(old)
    self.assertEqual(
        (old["model"], old["mean"], old["std"], old["cam_layer"],
         old["settings_version"]),
        ("preact_resnet18", [0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616],
         None, 3))
    # Without a recorded spec: the statistics cifar10 had then.
    old = {**json.loads(json.dumps(base)), "dataset_spec": None,
           "model": "wrn34_10", "act_natural_model": "resnet18"}
    run_settings.upgrade(old)
    self.assertEqual(
        (old["model"], old["act_natural_model"], old["cam_layer"],
         old["mean"]),
        ("wrn34_10", "preact_resnet18", "final_relu",
         [0.4914, 0.4822, 0.4465]))
    # The quick start's dataset and tfds:NAME kept their normalisation
    # (and their mean/std settings); version-2 files stay as they are, but
    # for the default CAM layer, which version 3 records as None (the model's
    # own cam_features).
    for config in ({**base, "dataset": "mnist_offline", "model": "small_cnn"},
                   {**base, "dataset": "tfds:beans", "mean": [0.5] * 3,
                    "model": "wrn28_10", "cam_layer": "group3_block4_add"},
                   {**base, "settings_version": 2}):
      upgraded = json.loads(json.dumps(config))
      run_settings.upgrade(upgraded)
      for name in ("model", "mean", "std"):
        self.assertEqual(upgraded[name], config[name], name)
      self.assertEqual(upgraded["cam_layer"],
                       None if config["cam_layer"] == "cam_features"
                       else config["cam_layer"])


@pytest.mark.slow
class KillAndResumeTest(tf.test.TestCase):

  def test_sigkill_mid_run_then_same_command_finishes_the_run(self):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    command = [
        sys.executable, os.path.join(ROOT, "scripts", "train.py"),
        f"--model_dir={model_dir}", "--max_train_examples=1024",
        "--max_test_examples=128", "--epochs=4", "--burn_in_epochs=1",
        "--epsilon=0.1", "--epsilon_low=0.07", "--step_size=0.025",
        "--num_steps=2", "--optimizer=adam", "--learning_rate=1e-3",
        "--eval_num_steps=2", "--eval_subset=64", "--noexport"]
    state = os.path.join(model_dir, "backup", "state.json")
    process = commands.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    epoch = 0
    while time.time() < deadline and process.poll() is None:
      if os.path.exists(state):
        with open(state) as f:
          epoch = json.load(f)["epoch"]
        if epoch >= 1:
          break
      time.sleep(0.05)
    self.assertIsNone(process.poll(), "the run ended before it was killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    self.assertBetween(epoch, 1, 3)
    self.assertFalse(os.path.exists(os.path.join(model_dir, "metrics.json")))
    result = commands.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    with open(os.path.join(model_dir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertGreaterEqual(metrics["resumed_at_epoch"], epoch)
    self.assertEqual(_epochs_logged(model_dir), [0, 1, 2, 3])
    with open(os.path.join(model_dir, "config.json")) as f:
      self.assertEqual(json.load(f)["epochs"], 4)


if __name__ == "__main__":
  tf.test.main()
