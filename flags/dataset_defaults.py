"""Per-dataset defaults of the training flags (the PART setup per dataset).

A flag given on the command line or in a flagfile always wins; these only
replace the generic defaults of flags/train_flags.py.
"""

from absl import flags

_MNIST_LIKE = {"epsilon": 0.1, "epsilon_low": 0.07, "step_size": 0.025}

DATASET_DEFAULTS = {
    # Reference code: SVHN trains with step 1/255 and weight decay 3.5e-3
    # (and without augmentation, which the dataset spec itself says).
    "svhn_cropped": {"step_size": 1 / 255, "weight_decay": 3.5e-3},
    # 8/255 is meaningless on digits and 0.3 does not train from scratch in a
    # few epochs; 0.1 does (shared/PART_METHOD.md, "Small offline runs").
    "mnist": _MNIST_LIKE,
    "fashion_mnist": _MNIST_LIKE,
    "mnist_offline": _MNIST_LIKE,
}


def dataset_in(argv, flag_values=flags.FLAGS):
  """The last `--dataset` in `argv` (flagfiles expanded), or None."""
  expanded = flag_values.read_flags_from_files(argv[1:], force_gnu=False)
  dataset = None
  for i, arg in enumerate(expanded):
    if arg.startswith("--dataset="):
      dataset = arg.split("=", 1)[1]
    elif arg == "--dataset" and i + 1 < len(expanded):
      dataset = expanded[i + 1]
  return dataset


def apply_dataset_defaults(argv, flag_values=flags.FLAGS) -> None:
  """Before parsing `argv`: makes its `--dataset`'s defaults the defaults.

  Done before parsing so that the validators judge the values a run will
  really use (e.g. `--dataset=mnist --epsilon_low=0.09` is fine: mnist's
  default epsilon is 0.1). Flags given explicitly still win.
  """
  dataset = dataset_in(argv, flag_values)
  if dataset is None:
    dataset = flag_values["dataset"].default
  for name, value in DATASET_DEFAULTS.get(dataset, {}).items():
    if name in flag_values:
      flag_values.set_default(name, value)
