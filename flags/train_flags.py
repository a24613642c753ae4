"""Flags of scripts/train.py, made from the configs (`part_tf.config`).

Every setting of a training run is a flag of the same name, with the
default and the help text of the config that owns it: the fixed configs'
settings, the `method` and each registered method's hyper-parameters, and
each registered regulariser's settings (`<name>_weight` defaults to 0:
off). Plug-ins named by `--plugins` are imported first, so their methods and
regularisers have flags too. After parsing, `check` builds the run's
`TrainConfig`, whose checks give one-line errors before TensorFlow loads.
"""

import os

from absl import flags

from part_tf import config as config_lib

from . import define_plugins_flag
from . import refuse_urls
from .budgets import DEFINE_budget

# Names of the flags `define_flags` defines (filled in by it).
FLAG_NAMES = ()

def define_flags(flag_values=flags.FLAGS, argv=None):
  """Defines the training flags on `flag_values`, after importing the
  plug-ins named in `argv` (default `sys.argv`)."""
  global FLAG_NAMES
  define_plugins_flag(flag_values, argv)
  before = set(flag_values)
  for setting in config_lib.all_settings().values():
    _define(setting, flag_values)
  flags.mark_flag_as_required("model_dir", flag_values=flag_values)
  FLAG_NAMES = tuple(sorted(set(flag_values) - before))
  _register_validators(flag_values)


def _define(setting, flag_values):
  """One flag for a `part_tf.config.Setting`."""
  name, kind, text = setting.name, setting.kind, setting.help or setting.name
  default = setting.flag_default
  if name in flag_values:
    return  # a setting shared by several components (e.g. beta)
  if kind == "budget":
    DEFINE_budget(name, default, text, flag_values=flag_values)
  elif kind == "enum":
    flags.DEFINE_enum(name, default, setting.choices(), text,
                      flag_values=flag_values)
  elif kind in ("floats", "ints"):
    flags.DEFINE_list(name, None if default is None else
                      [str(v) for v in default], text,
                      flag_values=flag_values)
  else:
    define = {"str": flags.DEFINE_string, "int": flags.DEFINE_integer,
              "float": flags.DEFINE_float, "bool": flags.DEFINE_bool}[kind]
    define(name, default, text, flag_values=flag_values)


def flat_values(flag_values=flags.FLAGS) -> dict:
  """{setting: value} of the parsed training flags."""
  return {name: flag_values[name].value for name in FLAG_NAMES}


def config_from_flags(flag_values=flags.FLAGS) -> config_lib.TrainConfig:
  """The run's `TrainConfig` from the parsed flags.

  Raises:
    ValueError: a value or combination the configs refuse (one line).
  """
  return config_lib.TrainConfig.from_flat(flat_values(flag_values))


def check(flag_values=flags.FLAGS) -> None:
  """After parsing: ValueError (one line) unless the flags make a run."""
  config_from_flags(flag_values)


def _register_validators(flag_values):
  refuse_urls("model_dir", "data_dir", "manual_dir", flag_values=flag_values)
  flags.register_validator(
      "model_dir", lambda v: v is None or not os.path.isfile(v),
      message="--model_dir names an existing file; it must be a folder",
      flag_values=flag_values)
  for name in ("data_dir", "manual_dir"):
    flags.register_validator(
        name, lambda v, n=name: v is None or not os.path.isfile(v) or (
            n == "manual_dir" and v.endswith(".zip")),
        message=f"--{name} names an existing file; it must be a folder",
        flag_values=flag_values)
