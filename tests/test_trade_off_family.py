"""Every method crossed with each plug-in regulariser, run the way
`scripts/train.py` runs them (`experiment.train`, on the offline data), and
a part_act run with consistency regularisation and the centre loss killed
and resumed through `scripts/train.py`."""

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from part_tf import components  # pylint: disable=unused-import
from part_tf import experiment
from part_tf import registry
from part_tf.config import TrainConfig
from tests import commands
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(max_train_examples=256, max_test_examples=32, batch_size=128,
            epsilon=0.1, epsilon_low=0.07, step_size=0.025, num_steps=1,
            eval_num_steps=1, eval_subset=32, optimizer="adam",
            learning_rate=1e-3, epochs=1, burn_in_epochs=0, image_count=0,
            export=False, seed=1)
REGULARISERS = {"consistency": dict(consistency_weight=1.0),
                "feature_alignment": dict(feature_alignment_weight=0.1),
                "center_loss": dict(center_loss_weight=0.01)}


def _rows(model_dir):
  with open(os.path.join(model_dir, "log.csv")) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
class CrossingTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def tearDownClass(cls):
    tf_config.disable_op_determinism()  # experiment.train turned it on
    super().tearDownClass()

  @parameterized.parameters(*itertools.product(registry.METHODS.names(),
                                               REGULARISERS))
  def test_method_with_regulariser(self, method, regulariser):
    model_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, model_dir)
    metrics = experiment.train(TrainConfig.from_flat(
        {"model_dir": model_dir, "method": method, **TINY,
         **REGULARISERS[regulariser]}))
    (row,) = _rows(model_dir)
    self.assertTrue(np.isfinite(float(row["loss"])))
    eps_mean = float(row["eps_mean"])
    method_class = registry.METHODS.get(method)
    if method_class.reweighted:  # CAM budgets from the first epoch
      self.assertBetween(eps_mean, 0.07, 0.1 - 1e-4)
      self.assertLess(float(row["full_eps_fraction"]), 1.0)
    else:
      self.assertAllClose(eps_mean, 0.1)
    if method_class.trains_natural_model:
      self.assertTrue(np.isfinite(float(row["natural_model_loss"])))
      self.assertIn("natural_model", metrics)
      self.assertTrue(os.path.exists(
          os.path.join(model_dir, "natural_classifier.keras")))
    else:
      self.assertNotIn("natural_model_loss", row)
    self.assertBetween(metrics["pgd1_accuracy"], 0.0,
                       metrics["natural_accuracy"] + 1e-9)


@pytest.mark.slow
class KilledACTRunTest(tf.test.TestCase):

  def test_part_act_with_regularisers_resumes_after_a_kill(self):
    # part_act + consistency + centre loss: two models, the centres, the
    # switch and the two-view input must all come back from the backup.
    # (Feature alignment is left out: ACT with feature alignment at a step
    # batch of 256 or more, which consistency makes, can differ between
    # processes in the 7th digit on this CPU; see the README.)
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    flags = [*TINY_TRAIN, "--max_train_examples=512", "--method=part_act",
             "--burn_in_epochs=1",
             "--consistency_weight=1", "--center_loss_weight=0.01",
             "--image_count=0", "--noexport"]
    script = os.path.join(ROOT, "scripts", "train.py")
    full_dir, killed_dir = (os.path.join(root, n) for n in ("full", "killed"))
    full = commands.run(
        [sys.executable, script, *flags, "--epochs=3",
         f"--model_dir={full_dir}"],
        capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(full.returncode, 0, full.stderr[-2000:])
    command = [sys.executable, script, *flags, "--epochs=3",
               f"--model_dir={killed_dir}"]
    process = commands.Popen(command, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    state = os.path.join(killed_dir, "backup", "state.json")
    deadline, epoch = time.time() + 300, 0
    while time.time() < deadline and process.poll() is None:
      if os.path.exists(state):
        with open(state) as f:
          epoch = json.load(f)["epoch"]
        if epoch >= 1:
          break
      time.sleep(0.02)
    self.assertIsNone(process.poll(), "the run ended before it was killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = commands.run(command, capture_output=True, text=True,
                           timeout=600, check=False)
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
    self.assertIn("resuming after epoch", resumed.stdout)
    with open(os.path.join(full_dir, "metrics.json")) as f:
      expected = json.load(f)
    with open(os.path.join(killed_dir, "metrics.json")) as f:
      got = json.load(f)
    for key in ("natural_accuracy", "pgd1_accuracy", "natural_model"):
      self.assertEqual(got[key], expected[key])
    for name in ("classifier.keras", "natural_classifier.keras"):
      a = keras.saving.load_model(os.path.join(full_dir, name))
      b = keras.saving.load_model(os.path.join(killed_dir, name))
      for wa, wb in zip(a.get_weights(), b.get_weights()):
        self.assertAllEqual(wa, wb)
    self.assertEqual(_rows(full_dir), _rows(killed_dir))
    # visualize.py crafts the pictures' AEs with the run's natural model.
    picture = os.path.join(root, "act.png")
    shown = commands.run(
        [sys.executable, os.path.join(ROOT, "scripts", "visualize.py"),
         f"--model_path={full_dir}", "--num_images=2", f"--output={picture}"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(shown.returncode, 0, shown.stderr[-2000:])
    with open(picture, "rb") as f:
      image = tf.io.decode_png(f.read(), channels=3).numpy()
    self.assertGreater(image.std(), 20.0)


if __name__ == "__main__":
  tf.test.main()
