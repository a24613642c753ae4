"""A new method and a new regulariser, each one class in this file, plug into
part_tf through its public API alone: registered here, trained with `fit`,
and trained by `scripts/train.py --plugins=tests.test_extending` with their
own flags, without an edit to part_tf.

The method is adversarial logit pairing (Kannan et al., 2018) with one
hyper-parameter; the regulariser is logit squeezing (the same paper).
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

import part_tf
from part_tf import attacks
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@part_tf.methods.register("alp")
@dataclasses.dataclass(frozen=True)
class ALP(part_tf.methods.Method):
  """Adversarial logit pairing: CE on the AEs plus the squared distance of
  the clean and adversarial logits.

  Attributes:
    pairing: weight of the logit pairing term.
  """
  pairing: float = 0.5

  def train_loss(self, out, y):
    adv = out.logits("adv")
    pairing = tf.reduce_sum(tf.square(adv - out.logits("clean")), axis=-1)
    return attacks.cross_entropy(adv, y) + self.pairing * pairing


@part_tf.methods.register("part_alp")
class PartALP(ALP):
  """ALP with PART's pixel-reweighted budget after burn-in."""
  reweighted = True


@part_tf.regularisers.register("logit_squeezing")
@dataclasses.dataclass(frozen=True)
class LogitSqueezing(part_tf.regularisers.Regulariser):
  """The squared norm of the adversarial logits.

  Attributes:
    weight: its weight.
  """
  weight: float = 0.05

  def term(self, out, y):
    del y
    return tf.reduce_sum(tf.square(out.logits("adv")), axis=-1)


def tearDownModule():  # pylint: disable=invalid-name
  """The registries are the process' own: leave them as the other tests
  know them (train.py imports this module again as its plug-in)."""
  for name in ("alp", "part_alp"):
    part_tf.registry.METHODS.remove(name)
  part_tf.registry.REGULARISERS.remove("logit_squeezing")


def _data():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, 16).astype(np.int32)
  return x, y


def _two_steps(**kwargs):
  """The classifier's weights after 2 steps of `fit` (batches of 8) of a
  PARTModel made with `kwargs`, from the same start."""
  tf.keras.utils.set_random_seed(1)
  classifier = part_tf.build_model("small_cnn", (28, 28, 1), 10)
  model = part_tf.PARTModel(classifier, epsilon=0.1, epsilon_low=0.07,
                            step_size=0.025, num_steps=2, burn_in_epochs=0,
                            **kwargs)
  model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
  x, y = _data()
  history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
  return [w.numpy() for w in classifier.trainable_weights], history.history


class ExtendingTest(tf.test.TestCase):

  def test_the_new_components_are_registered_with_their_settings(self):
    self.assertIs(part_tf.registry.METHODS.get("alp"), ALP)
    self.assertIs(part_tf.registry.REGULARISERS.get("logit_squeezing"),
                  LogitSqueezing)
    settings = part_tf.config.all_settings()
    self.assertEqual(settings["alp_pairing"].default, 0.5)
    self.assertEqual(settings["alp_pairing"].help,
                     "weight of the logit pairing term.")
    self.assertEqual(settings["logit_squeezing_weight"].flag_default, 0.0)
    config = part_tf.config.TrainConfig.from_flat(
        {"method": "part_alp", "alp_pairing": 2.0,
         "logit_squeezing_weight": 0.1})
    self.assertEqual(config.method, PartALP(pairing=2.0))
    self.assertEqual(config.regularisers, (LogitSqueezing(weight=0.1),))
    self.assertEqual(config.to_flat()["alp_pairing"], 2.0)
    self.assertTrue(part_tf.config.used_by("alp", "alp_pairing"))
    self.assertFalse(part_tf.config.used_by("at", "alp_pairing"))

  def test_the_new_method_trains_with_fit(self):
    at, _ = _two_steps(method="at")
    # With no pairing it is AT, bit for bit; with pairing it trains
    # otherwise, and its PART variant takes CAM budgets (burn-in 0).
    unpaired, _ = _two_steps(method=ALP(pairing=0.0))
    for a, b in zip(at, unpaired):
      self.assertAllEqual(a, b)
    paired, logs = _two_steps(method=ALP(pairing=1.0))
    self.assertNotAllClose(paired[0], at[0])
    self.assertTrue(np.isfinite(logs["loss"][0]))
    _, part_logs = _two_steps(method="part_alp")
    self.assertLess(part_logs["eps_mean"][0], 0.1)

  def test_the_new_regulariser_trains_with_fit(self):
    at, _ = _two_steps(method="at")
    off, _ = _two_steps(method="at", regularisers=[LogitSqueezing(weight=0)])
    for a, b in zip(at, off):
      self.assertAllEqual(a, b)
    on, logs = _two_steps(method="at", regularisers=[LogitSqueezing()])
    self.assertNotAllClose(on[0], at[0])
    self.assertTrue(np.isfinite(logs["loss"][0]))

  def test_train_py_trains_a_plug_in_method_with_its_flags(self):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--plugins=tests.test_extending", "--method=part_alp",
         "--alp_pairing=0.25", "--logit_squeezing_weight=0.01",
         *TINY_TRAIN, "--epochs=2", "--burn_in_epochs=1", "--noexport",
         f"--model_dir={model_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("with part_alp (epsilon 0.1, epsilon_low 0.07", result.stdout)
    self.assertIn("alp_pairing 0.25", result.stdout)
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["method"], config["alp_pairing"],
                      config["logit_squeezing_weight"]),
                     ("part_alp", 0.25, 0.01))
    with open(os.path.join(model_dir, "metrics.json")) as f:
      self.assertEqual(json.load(f)["method"], "part_alp")

  def test_without_the_plug_in_the_method_is_a_one_line_error(self):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--method=alp", f"--model_dir={tempfile.mkdtemp()}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    self.assertEqual(result.returncode, 1)
    self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)
    self.assertIn("alp", result.stderr)
    missing = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--plugins=no_such_module", f"--model_dir={tempfile.mkdtemp()}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    self.assertEqual(missing.returncode, 1)
    self.assertEqual(missing.stderr.strip(),
                     "error: --plugins: cannot import no_such_module: "
                     "ModuleNotFoundError: No module named 'no_such_module'")


if __name__ == "__main__":
  tf.test.main()
