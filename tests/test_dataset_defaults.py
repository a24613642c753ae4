"""Per-dataset flag defaults: applied only to flags the user did not set."""

import csv
import json
import os
import shutil
import sys
import tempfile
import textwrap

from absl import flags
from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import components  # pylint: disable=unused-import
from part_tf import config as config_lib
from part_tf import registry
from part_tf.presets import PRESETS
from part_tf.training import learning_rate
from part_tf_flags import dataset_defaults
from part_tf_flags.budgets import DEFINE_budget
from part_tf_flags.dataset_defaults import apply_dataset_defaults
from tests import commands
from tests import tiny_runs


def _flag_values(argv):
  fv = flags.FlagValues()
  flags.DEFINE_enum("dataset", "cifar10", registry.DATASETS.names(), "",
                    flag_values=fv)
  DEFINE_budget("epsilon", "8/255", "", flag_values=fv)
  DEFINE_budget("epsilon_low", "7/255", "", flag_values=fv)
  DEFINE_budget("step_size", "2/255", "", flag_values=fv)
  flags.DEFINE_float("weight_decay", 2e-4, "", flag_values=fv)
  flags.register_multi_flags_validator(
      ["epsilon", "epsilon_low"], lambda f: f["epsilon_low"] <= f["epsilon"],
      message="--epsilon_low must not be larger than --epsilon",
      flag_values=fv)
  apply_dataset_defaults(["prog", *argv], fv)
  fv(["prog", *argv])
  return fv


class DatasetDefaultsTest(tf.test.TestCase, parameterized.TestCase):

  def test_svhn_gets_the_reference_step_and_weight_decay(self):
    fv = _flag_values(["--dataset=svhn_cropped"])
    self.assertEqual(fv.step_size, 1 / 255)
    self.assertEqual(fv.weight_decay, 3.5e-3)
    self.assertEqual(fv.epsilon, 8 / 255)

  def test_explicit_flags_win(self):
    fv = _flag_values(["--dataset=svhn_cropped", "--step_size=3/255"])
    self.assertEqual(fv.step_size, 3 / 255)
    self.assertEqual(fv.weight_decay, 3.5e-3)

  def test_cifar_keeps_the_generic_defaults(self):
    fv = _flag_values(["--dataset=cifar10"])
    self.assertEqual((fv.epsilon, fv.epsilon_low, fv.step_size,
                      fv.weight_decay), (8 / 255, 7 / 255, 2 / 255, 2e-4))

  @parameterized.parameters(("mnist",), ("fashion_mnist",), ("mnist_offline",))
  def test_digits_get_a_digit_sized_budget(self, name):
    fv = _flag_values([f"--dataset={name}"])
    self.assertEqual((fv.epsilon, fv.epsilon_low, fv.step_size),
                     (0.1, 0.07, 0.025))

  def test_a_default_that_breaks_a_validator_is_an_error(self):
    fv = _flag_values(["--dataset=mnist", "--epsilon_low=0.2", "--epsilon=0.3"])
    self.assertEqual((fv.epsilon, fv.epsilon_low), (0.3, 0.2))
    with self.assertRaisesRegex(flags.IllegalFlagValueError, "epsilon_low"):
      _flag_values(["--dataset=mnist", "--epsilon_low=0.2"])

  def test_defaults_decide_validity(self):
    # 0.09 <= mnist's epsilon 0.1, though > the generic 8/255.
    fv = _flag_values(["--dataset=mnist", "--epsilon_low=0.09"])
    self.assertEqual((fv.epsilon, fv.epsilon_low), (0.1, 0.09))

  def test_dataset_from_a_flagfile(self):
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
      f.write("--dataset=svhn_cropped\n")
    path = f.name
    fv = _flag_values([f"--flagfile={path}"])
    self.assertEqual(fv.weight_decay, 3.5e-3)

  def test_names_are_datasets(self):
    self.assertContainsSubset(PRESETS, registry.DATASETS.names())
    self.assertIs(dataset_defaults.DATASET_DEFAULTS, PRESETS)

  def test_every_preset_key_is_a_setting(self):
    settings = config_lib.all_settings()
    for dataset, preset in PRESETS.items():
      unknown = sorted(set(preset) - set(settings))
      self.assertEmpty(unknown, f"{dataset}: {unknown}")
      # Each value is one the setting allows, as the config holds it.
      for name, value in preset.items():
        settings[name].check(value)
        self.assertNotIsInstance(value, list, (dataset, name))
    self.assertEqual(PRESETS["cifar10"]["lr_decay_epochs"], (60, 90))
    # A preset makes a valid run of its dataset, which holds its values
    # (trades_clean_passes only with the methods that use it).
    for dataset, preset in PRESETS.items():
      for method in ("part", "part_t"):
        config = config_lib.TrainConfig.from_flat(
            {**preset, "dataset": dataset, "method": method,
             "model_dir": "x"})
        flat = config.to_flat()
        for name, value in preset.items():
          if config_lib.used_by(method, name):
            self.assertEqual(flat[name], list(value) if isinstance(
                value, tuple) else value, (dataset, method, name))
          else:
            self.assertNotIn(name, flat, (dataset, method))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")

# Prints the training flags' values after parsing argv as train.py does.
_RESOLVE = textwrap.dedent("""
    import json, sys
    from absl import app, flags  # app defines --verbosity, as in a script
    from part_tf_flags import parse_flags_or_exit, train_flags
    train_flags.define_flags()
    parse_flags_or_exit(["train.py", *json.loads(sys.argv[1])])
    print(json.dumps({n: flags.FLAGS[n].value
                      for n in train_flags.FLAG_NAMES}))
    """)


def _resolved(*argv):
  """The training flags' values after train.py's parsing of `argv`."""
  result = commands.run(
      [sys.executable, "-c", _RESOLVE, json.dumps(["--model_dir=x", *argv])],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  if result.returncode:
    raise AssertionError(result.stderr[-2000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
class ReferenceSetupTest(tf.test.TestCase, parameterized.TestCase):
  """`--dataset=X` alone is the reference setup of configs/X_*.cfg."""

  @parameterized.parameters(
      ("cifar10", "configs/cifar10_resnet18.cfg"),
      ("svhn_cropped", "configs/svhn_resnet18.cfg"),
      ("tiny_imagenet", "configs/tiny_imagenet_resnet18.cfg"),
      (None, "configs/mnist_offline.cfg"))
  def test_dataset_alone_equals_its_config(self, dataset, config):
    alone = _resolved(*([f"--dataset={dataset}"] if dataset else []))
    configured = _resolved(f"--flagfile={config}")
    self.assertEqual(alone, configured)
    if dataset:
      self.assertEqual(
          (alone["model"], alone["optimizer"], alone["epochs"],
           alone["burn_in_epochs"], alone["lr_schedule"],
           alone["lr_decay_epochs"], alone["mean"], alone["std"],
           alone["trades_clean_passes"]),
          ("resnet18", "sgd", 80, 20, "reference", ["60", "90"], None, None,
           2))
      # The reference's PGD-20 evaluation steps by its training step.
      self.assertEqual(alone["eval_step_size"],
                       1 / 255 if dataset == "svhn_cropped" else None)
    else:  # the quick start keeps its quick defaults
      self.assertEqual((alone["dataset"], alone["model"], alone["epochs"],
                        alone["optimizer"], alone["trades_clean_passes"]),
                       ("mnist_offline", "small_cnn", 8, "adam", 1))

  @parameterized.parameters(["-dataset=cifar10"], ["-dataset", "cifar10"],
                            ["--dataset", "cifar10"])
  def test_every_spelling_of_the_dataset_flag_brings_its_defaults(self,
                                                                   *argv):
    values = _resolved(*argv)
    self.assertEqual((values["dataset"], values["model"], values["epsilon"]),
                     ("cifar10", "resnet18", 8 / 255))

  def test_given_flags_win_over_the_dataset_defaults(self):
    values = _resolved("--dataset=tiny_imagenet", "--model=small_cnn",
                       "--epochs=30", "--lr_decay_epochs=10")
    self.assertEqual((values["model"], values["epochs"],
                      values["lr_decay_epochs"], values["optimizer"]),
                     ("small_cnn", 30, ["10"], "sgd"))

  def test_train_py_prints_the_defaults_it_applied_and_uses_them(self):
    # CIFAR-10 through train.py on TFDS mock data, with the preset's model
    # (the reference's ResNet-18): the line names each applied default
    # once, config.json holds them, log.csv has the reference schedule's
    # rate of each epoch.
    model_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, model_dir)
    result = tiny_runs.train_on_mock_tfds(
        ["--dataset=cifar10", "--epochs=2", "--burn_in_epochs=1",
         "--lr_decay_epochs=1", "--num_steps=1", "--batch_size=32",
         "--max_train_examples=64", "--max_test_examples=32",
         "--eval_every=0", "--eval_num_steps=1", "--image_count=0",
         "--noexport", f"--model_dir={model_dir}"],
        num_examples=64)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    first = result.stdout.splitlines()[0]
    self.assertStartsWith(first, "cifar10 defaults (flags given on the "
                          "command line or in a flagfile win): ")
    applied = first.split(": ", 1)[1].split()
    self.assertEqual(
        applied, ["--model=resnet18", "--epsilon=8/255",
                  "--epsilon_low=7/255", "--step_size=2/255",
                  "--optimizer=sgd", "--learning_rate=0.01",
                  "--momentum=0.9", "--weight_decay=0.0002",
                  "--lr_schedule=reference", "--trades_clean_passes=2"])
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual(
        (config["model"], config["epochs"], config["optimizer"],
         config["learning_rate"], config["lr_schedule"],
         config["lr_decay_epochs"], config["mean"],
         config["dataset_spec"]["mean"], config["settings_version"],
         config["method"]),
        ("resnet18", 2, "sgd", 0.01, "reference", [1], None, [0.0] * 3, 3,
         "part"))
    # config.json records the settings the run uses: PART has no clean
    # passes of TRADES (the preset's 2 is for trades and part_t).
    self.assertNotIn("trades_clean_passes", config)
    with open(os.path.join(model_dir, "log.csv")) as f:
      rows = list(csv.DictReader(f))
    # Epoch 1 burns in at 0.01; epoch 2 is PART epoch 1 >= 1: 0.001.
    self.assertEqual([float(r["learning_rate"]) for r in rows],
                     [0.01, 0.001])
    classifier = keras.saving.load_model(
        os.path.join(model_dir, "classifier.keras"))
    self.assertEqual(sum(int(np.prod(w.shape))
                         for w in classifier.trainable_weights), 11_173_962)
    self.assertEmpty([l for l in classifier.layers
                      if isinstance(l, keras.layers.Normalization)])
    self.assertAllClose(config["epsilon"], 8 / 255)

  def test_a_reference_schedule_beyond_the_run_is_noted(self):
    # 80 epochs with 20 of burn-in reach PART epoch 60: the reference's
    # second decay (90) never happens, which the run says once.
    config = config_lib.TrainConfig.from_flat(
        {"model_dir": "x", "epochs": 80, "burn_in_epochs": 20,
         "lr_schedule": "reference", "lr_decay_epochs": (60, 90)})

    def note(config):  # as the run's start (experiment) asks for it
      return learning_rate.decay_note(config.optimizer,
                                      config.budget.burn_in_epochs)

    self.assertEqual(
        note(config),
        "note: --lr_schedule=reference counts the decay epochs after the 20 "
        "burn-in epochs: the rate does not decay at PART epoch 90 of 60 "
        "(--lr_decay_epochs)")
    self.assertIsNone(note(config.replace(lr_decay_epochs=(60,))))
    # piecewise counts from the start: 80 and 90 lie beyond 80 epochs.
    self.assertEqual(
        note(config.replace(lr_schedule="piecewise",
                            lr_decay_epochs=(60, 80, 90))),
        "note: the learning rate does not decay after epochs 80,90 within "
        "80 epochs (--lr_decay_epochs)")

if __name__ == "__main__":
  tf.test.main()
