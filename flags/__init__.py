"""absl flag definitions of the part_tf scripts."""

import sys

from absl import flags as absl_flags


def parse_flags_or_exit(argv, dataset_defaults=True):
  """absl's flag parsing, then the `--dataset` defaults; errors in one line.

  Pass as `app.run(main, flags_parser=parse_flags_or_exit)`. Scripts whose
  flags are not the training flags pass `dataset_defaults=False`.
  """
  from flags.dataset_defaults import apply_dataset_defaults  # pylint: disable=g-import-not-at-top
  try:
    if dataset_defaults and "dataset" in absl_flags.FLAGS:
      apply_dataset_defaults(argv)
    return absl_flags.FLAGS(argv)
  except absl_flags.Error as e:
    sys.exit(f"error: {e}")
