"""`--dataset=X` brings the preset of X (`part_tf.presets`) as the flags'
defaults: applied before parsing (so that `--help` shows them), given flags
win, and the run's first line names the ones it used.
"""

import re

from absl import flags

from part_tf.presets import PRESETS

# `--dataset=X`, `-dataset=X`, `--dataset X` and `-dataset X`, as absl reads
# them.
_DATASET = re.compile(r"^--?dataset(?:=(.*))?$")

# The presets: `part_tf.presets` (each value written there once).
DATASET_DEFAULTS = PRESETS


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
      if isinstance(value, tuple):  # a list flag's default is its text
        value = [str(v) for v in value]
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
