"""absl flag definitions of the part_tf scripts."""

import re
import sys

from absl import flags as absl_flags

# absl's own --verbosity: -1 (WARNING) unless given. The scripts print their
# settings, one line per epoch and the results themselves; --verbosity=0 (or
# higher) brings back absl's INFO lines and TensorFlow's C++ log lines.
QUIET_VERBOSITY = -1


def parse_flags_or_exit(argv, dataset_defaults=True):
  """absl's flag parsing, then the `--dataset` defaults; errors in one line.

  Pass as `app.run(main, flags_parser=parse_flags_or_exit)`. Scripts whose
  flags are not the training flags pass `dataset_defaults=False`. Unless
  `--verbosity` is given, absl logs only warnings and TensorFlow's C++ log
  lines are filtered out of stderr (`part_tf.log_filter`).
  """
  from flags.dataset_defaults import apply_dataset_defaults  # pylint: disable=g-import-not-at-top
  try:
    check_flagfiles(argv)
    if dataset_defaults and "dataset" in absl_flags.FLAGS:
      apply_dataset_defaults(argv)
    remaining = absl_flags.FLAGS(argv)
  except (absl_flags.Error, ValueError) as e:
    sys.exit(f"error: {e}")
  verbosity = absl_flags.FLAGS["verbosity"]
  if verbosity.using_default_value:
    # Set as a value, not a default: absl.app raises a default to INFO.
    absl_flags.FLAGS.verbosity = QUIET_VERBOSITY
  if verbosity.value < 0:
    from part_tf import log_filter  # pylint: disable=g-import-not-at-top
    log_filter.install()
  return remaining


def one_line(error: BaseException) -> str:
  """An exception as the one line a script prints after `error: `.

  OSErrors without a message of their own name the path and the reason.
  """
  if isinstance(error, OSError) and error.strerror:
    where = f" {error.filename}" if error.filename else ""
    return f"cannot use{where}: {error.strerror}"
  text = " ".join(str(error).split())
  return text or type(error).__name__


_FLAGFILE = re.compile(r"^--?flagfile(?:=(.*))?$")


def check_flagfiles(argv) -> None:
  """Raises ValueError naming any flagfile (nested ones too) that cannot be
  read as UTF-8 text; absl would fail on it with a traceback."""
  pending = list(_flagfile_paths(argv[1:]))
  seen = set()
  while pending:
    path = pending.pop()
    if path in seen:
      continue
    seen.add(path)
    try:
      with open(path, "rb") as f:
        raw = f.read()
    except OSError:
      continue  # absl reports a missing or unreadable flagfile itself
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"flagfile {path} is not UTF-8 text (byte "
                       f"0x{raw[e.start]:02x} at offset {e.start})") from None
    pending.extend(_flagfile_paths(
        line.strip() for line in text.splitlines()))


def _flagfile_paths(args):
  args = list(args)
  for i, arg in enumerate(args):
    match = _FLAGFILE.match(arg)
    if match is None:
      continue
    if match.group(1) is not None:
      yield match.group(1)
    elif i + 1 < len(args):
      yield args[i + 1]
