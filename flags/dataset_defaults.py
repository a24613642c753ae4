"""Per-dataset defaults of the training flags: the reference setup per dataset.

`python scripts/train.py --dataset=cifar10 --model_dir=...` alone trains the
PART reference code's setup for CIFAR-10 (its ResNet-18 on raw pixels, its
budgets, optimiser and per-epoch schedule; docs/method.md's parity table
lists every setting); the same holds for cifar100, svhn_cropped and
tiny_imagenet. The digit
datasets (mnist_offline, the quick start's, mnist and fashion_mnist) get the
quick setup of configs/mnist_offline.cfg. A flag given on the command line or
in a flagfile always wins; these only replace the generic defaults of
flags/train_flags.py, which `tfds:NAME` datasets keep.
"""

import re

from absl import flags

# `--dataset=X`, `-dataset=X`, `--dataset X` and `-dataset X`, as absl reads
# them.
_DATASET = re.compile(r"^--?dataset(?:=(.*))?$")

# The PART reference code's CIFAR-10 setup (configs/cifar10_resnet18.cfg
# writes the same out; tests/test_dataset_defaults.py checks that they agree).
# Its schedule counts the decay epochs 60 and 90 after the 20 burn-in
# epochs: the rate is 0.01 in epochs 1-79 and 0.001 in the 80th. No
# normalisation: --mean/--std stay unset.
_PAPER = {
    "model": "resnet18", "epsilon": 8 / 255, "epsilon_low": 7 / 255,
    "step_size": 2 / 255, "num_steps": 10, "epochs": 80,
    "burn_in_epochs": 20, "batch_size": 128, "optimizer": "sgd",
    "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 2e-4,
    "lr_schedule": "reference", "lr_decay_epochs": ["60", "90"],
    "eval_every": 5, "eval_num_steps": 20,
    # TRADES' KL target is a second clean pass in the reference code.
    "trades_clean_passes": 2,
}

# 8/255 is meaningless on digits and 0.3 does not train from scratch in a few
# epochs; 0.1 does (docs/method.md, "Small offline runs"). A small CNN, Adam
# and 8 epochs: about 10-15 s per epoch on a 2-core CPU.
_QUICK = {
    "model": "small_cnn", "epsilon": 0.1, "epsilon_low": 0.07,
    "step_size": 0.025, "num_steps": 10, "epochs": 8, "burn_in_epochs": 3,
    "batch_size": 128, "optimizer": "adam", "learning_rate": 0.001,
    "weight_decay": 0.0, "lr_schedule": "constant", "eval_num_steps": 20,
}

DATASET_DEFAULTS = {
    "cifar10": _PAPER,
    "cifar100": _PAPER,
    # Reference code: SVHN trains with step 1/255 and weight decay 3.5e-3
    # (and without augmentation, which the dataset spec itself says), and
    # its PGD-20 evaluation steps by that 1/255 too.
    "svhn_cropped": {**_PAPER, "step_size": 1 / 255, "weight_decay": 3.5e-3,
                     "eval_step_size": 1 / 255},
    # Same schedule and budgets as CIFAR-10, on 64x64 images.
    "tiny_imagenet": _PAPER,
    "mnist": _QUICK,
    "fashion_mnist": _QUICK,
    "mnist_offline": _QUICK,
}


def dataset_in(argv, flag_values=flags.FLAGS):
  """The last `--dataset` in `argv` (flagfiles expanded), or None."""
  expanded = flag_values.read_flags_from_files(argv[1:], force_gnu=False)
  dataset = None
  for i, arg in enumerate(expanded):
    if arg == "--":  # absl stops parsing flags here
      break
    match = _DATASET.match(arg)
    if match and match.group(1) is not None:
      dataset = match.group(1)
    elif match and i + 1 < len(expanded):
      dataset = expanded[i + 1]
  return dataset


def apply_dataset_defaults(argv, flag_values=flags.FLAGS) -> None:
  """Before parsing `argv`: makes its `--dataset`'s defaults the defaults.

  Done before parsing so that the validators judge the values a run will
  really use (e.g. `--dataset=mnist --epsilon_low=0.09` is fine: mnist's
  default epsilon is 0.1), and so that `--help` shows them. Flags given
  explicitly still win.
  """
  dataset = dataset_in(argv, flag_values)
  if dataset is None:
    dataset = flag_values["dataset"].default
  for name, value in DATASET_DEFAULTS.get(dataset, {}).items():
    if name in flag_values:
      # Not FlagValues.set_default: it runs the validators after each flag,
      # and a half-applied set (epochs 8 with the generic 20 burn-in epochs)
      # fails them. Parsing validates the whole set right after.
      flag_values[name]._set_default(value)  # pylint: disable=protected-access


def check_applied(argv, flag_values=flags.FLAGS) -> None:
  """After parsing: ValueError unless the defaults applied were those of the
  dataset the run uses (a spelling of --dataset that `dataset_in` missed
  would otherwise train one dataset with another's settings)."""
  dataset = dataset_in(argv, flag_values) or flag_values["dataset"].default
  if flag_values["dataset"].value != dataset:
    raise ValueError(
        f"--dataset={flag_values['dataset'].value} was read, but the "
        f"defaults of {dataset} were applied: write it as "
        f"--dataset={flag_values['dataset'].value}")


def applied_defaults(flag_values=flags.FLAGS) -> dict:
  """After parsing: {flag: value} of the dataset defaults this run uses (the
  ones no command line or flagfile replaced), in DATASET_DEFAULTS' order."""
  dataset = flag_values["dataset"].value
  return {name: flag_values[name].value
          for name in DATASET_DEFAULTS.get(dataset, {})
          if name in flag_values and flag_values[name].using_default_value}


def defaults_line(flag_values=flags.FLAGS) -> str | None:
  """The one line a run prints about the dataset defaults it applied, or
  None when it applied none."""
  applied = applied_defaults(flag_values)
  if not applied:
    return None
  parts = []
  for name, value in applied.items():
    flag = flag_values[name]
    text = flag.serialize()  # --name=value as the user would write it
    if isinstance(value, float) and name in ("epsilon", "epsilon_low",
                                              "step_size", "eval_step_size"):
      text = f"--{name}={_fraction(value)}"
    parts.append(text)
  return (f"{flag_values['dataset'].value} defaults (flags given on the "
          f"command line or in a flagfile win): {' '.join(parts)}")


def _fraction(value: float) -> str:
  """8/255 for 8/255, else the shortest float text."""
  steps = value * 255
  if abs(steps - round(steps)) < 1e-9 and round(steps) > 0:
    return f"{round(steps)}/255"
  return f"{value:g}"
