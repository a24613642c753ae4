"""absl flag definitions of the part_tf scripts."""

import sys

from absl import flags as absl_flags


def parse_flags_or_exit(argv):
  """absl's flag parsing, with a bad value reported in one line.

  Pass as `app.run(main, flags_parser=parse_flags_or_exit)`.
  """
  try:
    return absl_flags.FLAGS(argv)
  except absl_flags.Error as e:
    sys.exit(f"error: {e}")
