"""scripts/train.py flags: budgets parse, bad values give a one-line error."""

import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import parameterized
import tensorflow as tf

from part_tf import components  # pylint: disable=unused-import
from part_tf import config as config_lib
from part_tf import registry
from part_tf.config import TrainConfig
from part_tf_flags.budgets import parse_budget
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")


def run_train(*args, timeout=120):
  return commands.run([sys.executable, TRAIN, *args], capture_output=True,
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


# Prints the flags train.py defines, as JSON: {name: {default, help,
# choices}} (importing the command defines them, as running it does).
_TRAIN_FLAGS = textwrap.dedent("""
    import json
    from absl import flags
    from part_tf_flags.cli import train  # pylint: disable=unused-import
    print(json.dumps({
        name: {"default": flag.default, "help": flag.help,
               "choices": getattr(flag.parser, "enum_values", None)}
        for name, flag in flags.FLAGS._flags().items()}, default=str))
    """)

# Defines the train flags, parses bad values and checks that neither
# TensorFlow nor Keras was imported; prints the error and the modules.
_NO_TENSORFLOW = textwrap.dedent("""
    import json, sys
    from absl import flags
    from part_tf_flags.cli import train  # pylint: disable=unused-import
    from part_tf_flags import parse_flags_or_exit, train_flags
    try:
      parse_flags_or_exit(["train.py", "--model_dir=x", "--epsilon=4/255",
                           "--epsilon_low=8/255", "--center_lr=2"],
                          check=train_flags.check)
      error = None
    except SystemExit as e:
      error = str(e.code)
    # A good value: the whole config is built, every setting checked.
    flags.FLAGS.epsilon_low = 1 / 255
    flags.FLAGS.center_lr = 0.5
    train_flags.check()
    config = train_flags.config_from_flags()
    print(json.dumps({
        "error": error, "method": config.method_name,
        "modules": sorted(m for m in sys.modules
                          if m.split(".")[0] in ("tensorflow", "keras",
                                                 "tf_keras"))}))
    """)


def _run_python(code, fresh=False):
  """`python -c code`'s last line as JSON; `fresh`: in a new interpreter
  (the zygote's has TensorFlow imported already)."""
  run = subprocess.run if fresh else commands.run
  result = run([sys.executable, "-c", code], capture_output=True,
               text=True, timeout=120, cwd=ROOT, check=False)
  if result.returncode:
    raise AssertionError(result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


def _attribute_doc(owner, field):
  """The entry of `field` in the `Attributes:` section of the docstring of
  `owner` (or of the first of its bases that has one), on one line."""
  for klass in owner.__mro__:
    doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
    lines = doc.split("Attributes:\n", 1)[-1].splitlines() if (
        "Attributes:\n" in doc) else []
    for i, line in enumerate(lines):
      if line.startswith(f"  {field}: "):
        words = [line[len(f"  {field}: "):].strip()]
        for more in lines[i + 1:]:
          if not more.startswith("    "):
            break
          words.append(more.strip())
        return " ".join(words)
  raise AssertionError(f"{owner.__name__} does not document {field}")


class FlagsFromConfigsTest(tf.test.TestCase):
  """The flags of train.py are generated from the configs and registries."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.flags = _run_python(_TRAIN_FLAGS)

  def test_every_setting_is_a_flag_with_its_default_and_help(self):
    settings = config_lib.all_settings()
    self.assertGreater(len(settings), 60)
    regulariser_weights = {f"{name}_weight"
                           for name in registry.REGULARISERS.names()}
    self.assertContainsSubset(
        {"consistency_weight", "feature_alignment_weight",
         "center_loss_weight"}, regulariser_weights)
    for name, setting in settings.items():
      self.assertIn(name, self.flags)
      flag = self.flags[name]
      default = setting.default
      if name in regulariser_weights:
        default = 0.0  # a regulariser is off unless its weight is given
      if setting.kind == "ints" and flag["default"] is not None:
        flag["default"] = tuple(int(v) for v in flag["default"])
      if setting.kind == "floats" and flag["default"] is not None:
        flag["default"] = tuple(float(v) for v in flag["default"])
      self.assertEqual(flag["default"], default, name)
      text = flag["help"]
      if flag["choices"] is not None:  # absl starts it with the choices
        prefix = f"<{'|'.join(flag['choices'])}>: "
        self.assertStartsWith(text, prefix)
        text = text[len(prefix):]
      self.assertEqual(text, _attribute_doc(setting.owner,
                                            setting.field.name), name)
    # Settings of a method's or a regulariser's own.
    self.assertEqual(self.flags["act_alpha"]["default"], 0.9)
    self.assertEqual(self.flags["beta"]["default"], 6.0)
    self.assertEqual(self.flags["center_lr"]["default"], 0.5)
    self.assertEqual(self.flags["trades_clean_passes"]["default"], 1)

  def test_cluster_timeout_default_is_the_library_one(self):
    from part_tf import distribution  # pylint: disable=g-import-not-at-top
    self.assertEqual(self.flags["cluster_timeout"]["default"],
                     distribution.DEFAULT_CLUSTER_TIMEOUT)
    self.assertEqual(
        TrainConfig.from_flat({"model_dir": "x"}).run.cluster_timeout,
        distribution.DEFAULT_CLUSTER_TIMEOUT)

  def test_enum_choices_are_the_registries_names(self):
    from part_tf import attack_catalogue  # pylint: disable=g-import-not-at-top
    from part_tf.regularisers import consistency  # pylint: disable=g-import-not-at-top
    from_registries = {
        "method": registry.METHODS.names(),
        "model": registry.MODELS.names(),
        "act_natural_model": registry.MODELS.names(),
        "cam": registry.CAM_METHODS.names(),
        "mask_rule": registry.MASK_RULES.names(),
        "attack": tuple(attack_catalogue.training_attacks()),
        "consistency_views": consistency.VIEW_AUGMENTATIONS,
    }
    settings = config_lib.all_settings()
    enums = {name for name, flag in self.flags.items()
             if flag["choices"] is not None and name in settings}
    self.assertContainsSubset(from_registries, enums)
    for name in enums:
      choices = tuple(self.flags[name]["choices"])
      if name in from_registries:
        self.assertEqual(choices, tuple(from_registries[name]), name)
      else:  # a fixed list of the config's
        self.assertEqual(choices, settings[name].field.metadata["choices"],
                         name)
    self.assertEqual(
        registry.METHODS.names(),
        ("at", "part", "trades", "part_t", "mart", "part_m", "act",
         "part_act"))
    self.assertEqual(
        registry.MODELS.names(),
        ("small_cnn", "resnet18", "preact_resnet18", "wrn28_10", "wrn34_10"))
    self.assertEqual(registry.MASK_RULES.names(), ("zscore", "official",
                                                   "soft"))
    # The dataset is a registered one or tfds:NAME: checked by the config.
    self.assertIsNone(self.flags["dataset"]["choices"])

  def test_parsing_flags_imports_neither_tensorflow_nor_keras(self):
    out = _run_python(_NO_TENSORFLOW, fresh=True)
    self.assertEqual(out["error"], "error: epsilon_low (0.03137) must not be "
                     "larger than epsilon (0.01569)")
    self.assertEqual(out["method"], "part")
    self.assertEqual(out["modules"], [])


class BadFlagsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("eps_low_above_eps", ["--epsilon=4/255", "--epsilon_low=8/255"],
       "epsilon_low (0.03137) must not be larger than epsilon (0.01569)"),
      ("negative_budget", ["--epsilon=-8/255"], "must be a finite number >= 0"),
      ("unparsable_budget", ["--epsilon=eight"], "not a number or a fraction"),
      ("zero_step", ["--step_size=0"], "step_size must be > 0, got 0.0"),
      ("epsilon_of_one", ["--epsilon=1", "--epsilon_low=0.5"],
       "epsilon must be < 1, got 1.0"),
      ("burn_in_too_long", ["--epochs=5", "--burn_in_epochs=5"],
       "burn_in_epochs must be smaller than epochs"),
      ("unknown_dataset", ["--dataset=imagenet21k"],
       "dataset must be one of mnist_offline, "),
      ("unknown_model", ["--model=vgg"],
       "--model=vgg: value should be one of <small_cnn|"),
      ("unknown_method", ["--method=fgsm"],
       "--method=fgsm: value should be one of <at|part|"),
      ("official_on_grayscale", ["--mask_rule=official"],
       "mask_rule=official needs 3-channel images, but mnist_offline has 1 "
       "channel(s): use mask_rule=zscore or soft"),
      ("bad_decay_epochs", ["--lr_decay_epochs=60,x"],
       "lr_decay_epochs must be whole numbers like 60,90, got '60,x'"),
      ("act_alpha_above_one", ["--method=act", "--act_alpha=1.5"],
       "act_alpha must be <= 1, got 1.5"),
      ("zero_act_temperature", ["--method=act", "--act_temperature=0"],
       "act_temperature must be > 0, got 0.0"),
      ("negative_regulariser", ["--center_loss_weight=-1"],
       "center_loss_weight must be >= 0, got -1.0"),
      ("consistency_without_augmentation",
       ["--consistency_weight=1", "--noaugment"],
       "consistency_weight needs augment: its two views are two "
       "augmentations of each image"),
      ("views_without_consistency", ["--consistency_views=randaugment"],
       "consistency_views=randaugment augments consistency "
       "regularisation's views: it needs consistency_weight > 0"),
      ("unknown_views", ["--consistency_weight=1",
                         "--consistency_views=autoaugment"],
       "--consistency_views=autoaugment: value should be one of "
       "<crop_flip|randaugment>"),
      ("three_clean_passes", ["--trades_clean_passes=3"],
       "trades_clean_passes must be <= 2, got 3"),
      ("center_lr_above_one", ["--center_lr=2"],
       "center_lr must be <= 1, got 2.0"),
      ("zero_eval_epsilon", ["--eval_epsilon=0"],
       "eval_epsilon must be > 0 and < 1, got 0.0"),
      ("zero_cluster_timeout", ["--cluster_timeout=0"],
       "cluster_timeout must be > 0, got 0.0"),
  )
  def test_one_line_error(self, args, message):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    result = run_train(f"--model_dir={model_dir}", *args)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn(message, result.stderr)
    self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)
    self.assertStartsWith(result.stderr, "error: ")
    self.assertNotIn("Traceback", result.stderr)
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
                 "--consistency_temperature:itssharpeningtemperature"
                 "(paper:0.5)", "--feature_alignment_weight:",
                 "--center_loss_weight:", "--center_lr:", "--feature_layer:",
                 "--act_natural_model:<small_cnn|resnet18|preact_resnet18|"
                 "wrn28_10|wrn34_10>",
                 "--eval_epsilon:", "--eval_batch_size:",
                 "--method:<at|part|trades|part_t|mart|part_m|act|part_act>:"
                 "thetrainingmethod:",
                 "--consistency_views:<crop_flip|randaugment>:itsviews:",
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
