"""scripts/train.py flags: budgets parse, bad values give a one-line error."""

import os
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import tensorflow as tf

from part_tf_flags import train_flags
from part_tf_flags.budgets import parse_budget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")


def run_train(*args, timeout=120):
  return subprocess.run([sys.executable, TRAIN, *args], capture_output=True,
                        text=True, timeout=timeout, cwd=ROOT)


class BudgetTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("8/255", 8 / 255), ("0.03", 0.03), ("2e-3", 2e-3),
                            (" 1 / 4 ", 0.25), ("0", 0.0))
  def test_parses(self, text, value):
    self.assertEqual(parse_budget(text), value)

  @parameterized.parameters(("abc",), ("8/0",), ("-1/255",), ("1/2/3",),
                            ("nan",), ("inf",), ("",))
  def test_rejects(self, text):
    with self.assertRaises(ValueError):
      parse_budget(text)


class FlagNamesTest(tf.test.TestCase):

  def test_choices_are_the_library_names(self):
    from part_tf import cam, data, models, training  # pylint: disable=g-import-not-at-top
    self.assertEqual(sorted(train_flags.DATASET_NAMES), sorted(data.DATASET_NAMES))
    self.assertEqual(sorted(train_flags.MODEL_NAMES), sorted(models.MODEL_NAMES))
    self.assertEqual(sorted(train_flags.METHOD_NAMES), sorted(training.METHOD_NAMES))
    self.assertEqual(
        sorted(train_flags.REWEIGHTED_METHODS),
        sorted(m for m, spec in training.METHODS.items() if spec.reweighted))
    self.assertEqual(
        sorted(train_flags.CONCURRENT_METHODS),
        sorted(m for m, spec in training.METHODS.items() if spec.concurrent))
    self.assertEqual(train_flags.ATTACKS, training.ATTACKS)
    self.assertEqual(sorted(train_flags.CAM_METHODS), sorted(cam.CAM_METHODS))
    self.assertEqual(sorted(train_flags.MASK_RULES), sorted(cam.MASK_RULES))
    from part_tf.data import view_augmentation  # pylint: disable=g-import-not-at-top
    self.assertEqual(train_flags.VIEW_AUGMENTATIONS,
                     view_augmentation.VIEW_AUGMENTATIONS)

  def test_cluster_timeout_default_is_the_library_one(self):
    from part_tf import distribution, experiment  # pylint: disable=g-import-not-at-top
    from absl import flags  # pylint: disable=g-import-not-at-top
    values = flags.FlagValues()
    train_flags.define_cluster_timeout(values)
    self.assertEqual(values["cluster_timeout"].default,
                     distribution.DEFAULT_CLUSTER_TIMEOUT)
    self.assertEqual(experiment.TrainConfig(model_dir="x").cluster_timeout,
                     distribution.DEFAULT_CLUSTER_TIMEOUT)


class BadFlagsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("eps_low_above_eps", ["--epsilon=4/255", "--epsilon_low=8/255"],
       "--epsilon_low must not be larger than --epsilon"),
      ("negative_budget", ["--epsilon=-8/255"], "must be a finite number >= 0"),
      ("unparsable_budget", ["--epsilon=eight"], "not a number or a fraction"),
      ("zero_step", ["--step_size=0"], "--step_size must be > 0"),
      ("epsilon_of_one", ["--epsilon=1", "--epsilon_low=0.5"],
       "--epsilon must be > 0 and < 1"),
      ("burn_in_too_long", ["--epochs=5", "--burn_in_epochs=5"],
       "--burn_in_epochs must be smaller than --epochs"),
      ("unknown_dataset", ["--dataset=imagenet21k"], "dataset"),
      ("unknown_model", ["--model=vgg"], "model"),
      ("unknown_method", ["--method=fgsm"], "method"),
      ("official_on_grayscale", ["--mask_rule=official"], "needs RGB images"),
      ("bad_decay_epochs", ["--lr_decay_epochs=60,x"], "lr_decay_epochs"),
      ("act_alpha_above_one", ["--method=act", "--act_alpha=1.5"],
       "act_alpha"),
      ("zero_act_temperature", ["--method=act", "--act_temperature=0"],
       "--act_temperature must be > 0"),
      ("negative_regulariser", ["--center_loss_weight=-1"],
       "center_loss_weight"),
      ("consistency_without_augmentation",
       ["--consistency_weight=1", "--noaugment"],
       "--consistency_weight needs --augment"),
      ("views_without_consistency", ["--consistency_views=randaugment"],
       "--consistency_views augments consistency regularisation's views: "
       "it needs --consistency_weight > 0"),
      ("unknown_views", ["--consistency_weight=1",
                         "--consistency_views=autoaugment"],
       "consistency_views"),
      ("three_clean_passes", ["--trades_clean_passes=3"],
       "trades_clean_passes"),
      ("center_lr_above_one", ["--center_lr=2"], "--center_lr must be in"),
      ("zero_eval_epsilon", ["--eval_epsilon=0"],
       "--eval_epsilon must be > 0 and < 1"),
      ("zero_cluster_timeout", ["--cluster_timeout=0"],
       "--cluster_timeout must be > 0 seconds"),
  )
  def test_one_line_error(self, args, message):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    result = run_train(f"--model_dir={model_dir}", *args)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn(message, result.stderr)
    self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)
    self.assertFalse(os.path.exists(model_dir))  # nothing written

  def test_model_dir_that_is_a_file(self):
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
      f.write(b"keep me")
    result = run_train(f"--model_dir={f.name}")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--model_dir names an existing file", result.stderr)
    with open(f.name, "rb") as g:
      self.assertEqual(g.read(), b"keep me")

  def test_data_dir_that_is_a_file(self):
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
      f.write(b"not a folder")
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    result = run_train(f"--model_dir={model_dir}", f"--data_dir={f.name}")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--data_dir names an existing file", result.stderr)
    self.assertFalse(os.path.exists(model_dir))

  def test_missing_model_dir(self):
    result = run_train()
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("model_dir", result.stderr)

  @parameterized.parameters(
      *sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
              if f.endswith(".cfg")))
  def test_shipped_flagfiles_are_valid(self, name):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    result = run_train(f"--flagfile=configs/{name}", f"--model_dir={model_dir}",
                       "--only_check_args")
    self.assertEqual(result.returncode, 0, result.stderr)

  def test_helpfull_lists_the_choices(self):
    result = run_train("--helpfull")  # absl exits 1 after printing help
    self.assertNotIn("Traceback", result.stderr)
    text = "".join(result.stdout.split())  # absl wraps long choice lists
    self.assertIn("--manual_dir", result.stdout)
    for choice in ("<at|part|trades|part_t|mart|part_m|act|part_act>",
                   "<pgd|mma>",
                   "mnist_offline", "tiny_imagenet", "resnet18", "wrn34_10",
                   "<gradcam_plus_plus|gradcam|layercam|xgradcam>",
                   "<zscore|official|soft>"):
      self.assertIn(choice, text)
    # The trade-off family's flags, each with its paper's default.
    for flag in ("--act_alpha:ACT:weightoftherobustmodel'sdistillationterm"
                 "(paper:0.9).(default:'0.9')",
                 "--act_temperature:ACT:distillationtemperature(paper:4).",
                 "(paper:1.0;0:off).(default:'0.0')",
                 "--consistency_temperature:Itssharpeningtemperature"
                 "(paper:0.5)", "--feature_alignment_weight:",
                 "--center_loss_weight:", "--center_lr:", "--feature_layer:",
                 "--act_natural_model:<preact_resnet18|resnet18|small_cnn|"
                 "wrn28_10|wrn34_10>",
                 "--eval_epsilon:",
                 "--consistency_views:<crop_flip|randaugment>:Itsviews:",
                 "--trades_clean_passes:trades/part_t:training-mode"):
      self.assertIn(flag, text)


class ManualDirTest(tf.test.TestCase):

  def test_wrong_manual_dir_is_a_one_line_error(self):
    tmp = tempfile.mkdtemp()
    model_dir = os.path.join(tmp, "run")
    manual_dir = os.path.join(tmp, "empty")
    os.mkdir(manual_dir)
    result = run_train(f"--model_dir={model_dir}", "--dataset=tiny_imagenet",
                       f"--data_dir={os.path.join(tmp, 'tfds')}",
                       f"--manual_dir={manual_dir}", timeout=300)
    self.assertNotEqual(result.returncode, 0)
    last = result.stderr.strip().splitlines()[-1]
    self.assertEqual(
        last, "error: Dataset 'tiny_imagenet': expected tiny-imagenet-200.zip"
        " or an extracted tiny-imagenet-200/ folder (with wnids.txt) in the "
        f"manual dir {manual_dir}, found neither.")
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  tf.test.main()
