"""absl flag definitions of the part_tf scripts."""

import os
import re
import sys

from absl import flags as absl_flags

# absl's own --verbosity: -1 (WARNING) unless given. The scripts print their
# settings, one line per epoch and the results themselves; --verbosity=0 (or
# higher) brings back absl's INFO lines and TensorFlow's C++ log lines.
QUIET_VERBOSITY = -1


def parse_flags_or_exit(argv, dataset_defaults=True, check=None):
  """absl's flag parsing, then the `--dataset` defaults; errors in one line.

  Pass as `app.run(main, flags_parser=parse_flags_or_exit)`. Scripts whose
  flags are not the training flags pass `dataset_defaults=False`; `check`
  (raising ValueError) runs after parsing, e.g. the configs' checks. Unless
  `--verbosity` is given, absl logs only warnings and TensorFlow's C++ log
  lines are filtered out of stderr (`part_tf.log_filter`).
  """
  from .dataset_defaults import apply_dataset_defaults  # pylint: disable=g-import-not-at-top
  from .dataset_defaults import check_applied  # pylint: disable=g-import-not-at-top
  show_script_flags_in_help()
  # `bazel run` starts the command in its runfiles: relative paths (flagfile,
  # --model_dir) mean the folder it was run from, as for the other ways.
  if os.environ.get("BUILD_WORKING_DIRECTORY"):
    os.chdir(os.environ["BUILD_WORKING_DIRECTORY"])
  try:
    argv = find_packaged_configs(argv)
    check_flagfiles(argv)
    with_defaults = dataset_defaults and "dataset" in absl_flags.FLAGS
    if with_defaults:
      apply_dataset_defaults(argv)
    remaining = absl_flags.FLAGS(argv)
    if with_defaults:
      check_applied(argv)
    if check is not None:
      check()
  except (absl_flags.Error, ValueError) as e:
    sys.exit(f"error: {e}")
  except SystemExit as e:
    # absl exits with 1 after printing the help a user asked for; that is
    # not a failure.
    if e.code == 1 and _HELP_FLAGS.intersection(argv[1:]):
      sys.exit(0)
    raise
  verbosity = absl_flags.FLAGS["verbosity"]
  if verbosity.using_default_value:
    # Set as a value, not a default: absl.app raises a default to INFO.
    absl_flags.FLAGS.verbosity = QUIET_VERBOSITY
  if verbosity.value < 0:
    from part_tf import log_filter  # pylint: disable=g-import-not-at-top
    log_filter.install()
  return remaining


# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells
# report it.
INTERRUPTED_EXIT = 130


def run_command(main, dataset_defaults=True, check=None, interrupted=None,
                doc=None):
  """`absl.app.run(main)` with the flags read by `parse_flags_or_exit`, and
  Ctrl-C ending in one line.

  A KeyboardInterrupt anywhere (flag parsing, TensorFlow's import, the
  work) prints one line on stderr, no traceback, and exits with status 130.

  Args:
    main: the command's main function.
    dataset_defaults, check: as for `parse_flags_or_exit`.
    interrupted: `() -> str`, the line to print (e.g. where a run resumes);
      called only once the flags are parsed. Default: "interrupted".
    doc: the command's docstring, its usage text: absl prints the main
      module's docstring, so it becomes that, with the command named as the
      user ran it (`usage`).
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  if doc is not None:
    sys.modules["__main__"].__doc__ = usage(doc)
  try:
    app.run(main, flags_parser=lambda argv: parse_flags_or_exit(
        argv, dataset_defaults=dataset_defaults, check=check))
  except KeyboardInterrupt:
    line = "interrupted"
    if interrupted is not None and absl_flags.FLAGS.is_parsed():
      try:
        line = interrupted()
      except Exception:  # pylint: disable=broad-except
        pass  # the plain line is still true
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    sys.exit(INTERRUPTED_EXIT)


_HELP_FLAGS = {"--help", "-help", "-h", "-?", "--helpfull", "-helpfull",
               "--helpshort", "-helpshort", "--helpxml", "-helpxml"}

# The commands: `scripts/NAME.py`, installed as `part-NAME`.
COMMANDS = ("train", "evaluate", "compare", "visualize", "benchmark")
_SCRIPT_MENTION = re.compile(
    r"(python )?scripts/(" + "|".join(COMMANDS) + r")\.py")


def command_name(name: str, argv0: str, main_module: str | None = None):
  """How to run the command `name` (one of COMMANDS) the way the user ran
  the current one.

  Args:
    name: the command, e.g. "compare".
    argv0: `sys.argv[0]` of the running command.
    main_module: the name `python -m` ran (`__main__.__spec__.name`), or
      None.

  Returns:
    "part-compare" when the user ran an installed command (`part-train`),
    "python DIR/compare.py" when they ran a script as `python DIR/train.py`,
    "python -m part_tf_flags.cli.compare" for
    `python -m part_tf_flags.cli.train`, and
    None when the way is unknown (e.g. `bazel run`).
  """
  if main_module and main_module.startswith("part_tf_flags.cli."):
    return f"python -m part_tf_flags.cli.{name}"
  base = os.path.basename(argv0)
  if base.startswith("part-"):
    return f"part-{name}"
  if base.endswith(".py"):
    return f"python {os.path.join(os.path.dirname(argv0), name + '.py')}"
  return None


def usage(doc: str, argv0: str | None = None,
          main_module: str | None = None) -> str:
  """A command's docstring as its `--help` shows it: each `python
  scripts/NAME.py` (and bare `scripts/NAME.py`) written as the user runs
  that command (`command_name`): `part-train --help` says `part-train`,
  `python scripts/train.py --help` says `python scripts/train.py`.

  Args:
    doc: the docstring, written with `python scripts/NAME.py`.
    argv0: `sys.argv[0]` (default: the running process's).
    main_module: as for `command_name` (default: `__main__`'s spec name).

  Returns:
    The usage text; `doc` unchanged when the way is unknown.
  """
  if argv0 is None:
    argv0 = sys.argv[0]
  if main_module is None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main_module = getattr(spec, "name", None)

  def written(match):
    command = command_name(match.group(2), argv0, main_module)
    if command is None:
      return match.group(0)
    if match.group(1) or not command.startswith("python "):
      return command
    return command[len("python "):]  # a path mentioned, not a command

  return _SCRIPT_MENTION.sub(written, doc)


def show_script_flags_in_help(flag_values=absl_flags.FLAGS) -> None:
  """Makes `--help` list every flag of the running script.

  absl's `--help` shows the key flags of the main module (`sys.argv[0]`),
  but the scripts' flags are defined in `part_tf_flags.train_flags` and
  `part_tf_flags.cli.*`, so only `--helpfull` (which adds absl's and
  TensorFlow's flags) showed them. This declares the flags of those modules
  key flags of the main module.
  """
  main = sys.argv[0]
  for module, module_flags in flag_values.flags_by_module_dict().items():
    if module.startswith("part_tf") or module == main:
      for flag in module_flags:
        flag_values.register_key_flag_for_module(main, flag)


# The library's rule (part_tf.paths); imported here for the flags.
from part_tf.paths import check_local_path  # pylint: disable=g-import-not-at-top,unused-import
from part_tf.paths import is_url  # pylint: disable=g-import-not-at-top
from part_tf.paths import LOCAL_PATHS_ONLY  # pylint: disable=g-import-not-at-top


def refuse_urls(*names, flag_values=absl_flags.FLAGS) -> None:
  """Registers validators that refuse URL-like values of the path flags
  `names` with a one-line error.

  part_tf writes its run folders and reports with local file operations
  (an flock on the folder, fsync and atomic renames keep a crash from
  leaving a half file that looks valid); object stores such as GCS offer
  none of these, so a `gs://bucket/run` would silently become a local
  folder named `gs:`. Mount the bucket (e.g. gcsfuse) and pass its path.
  """
  for name in names:
    absl_flags.register_validator(
        name, lambda v: not is_url(v),
        message=f"--{name} is a URL: {LOCAL_PATHS_ONLY}",
        flag_values=flag_values)


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


def _config_folders():
  """Where the shipped configs are: the installed `part_tf_configs` package,
  else the repository's configs/ folder next to this one."""
  folders = []
  try:
    import part_tf_configs  # pylint: disable=g-import-not-at-top
    folders.extend(part_tf_configs.__path__)
  except ImportError:
    pass
  folders.append(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "configs"))
  return folders


def find_packaged_configs(argv):
  """`--flagfile=configs/NAME.cfg` (or `NAME.cfg`) that does not exist from
  the current folder names the shipped config of that name, so that the
  README's commands work from any folder once the package is installed."""
  out = list(argv[:1])
  for arg in argv[1:]:
    match = _FLAGFILE.match(arg)
    path = match.group(1) if match else None
    if path and not os.path.exists(path) and os.path.dirname(path) in (
        "", "configs"):
      for folder in _config_folders():
        candidate = os.path.join(folder, os.path.basename(path))
        if os.path.isfile(candidate):
          arg = f"--flagfile={candidate}"
          break
    out.append(arg)
  return out


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


# `--plugins=a,b`, `--plugins a,b` (also in flagfiles), read before the
# flags are defined.
_PLUGINS = re.compile(r"^--?plugins(?:=(.*))?$")


def define_plugins_flag(flag_values=absl_flags.FLAGS, argv=None) -> list:
  """Defines `--plugins` and imports the modules it names in `argv`
  (default `sys.argv`), before the command defines its other flags: the
  methods, regularisers, models, datasets, CAMs, mask rules and attacks they
  register become choices like the built-in ones. Returns their names."""
  absl_flags.DEFINE_list(
      "plugins", [], "Python modules to import before the flags are read "
      "(e.g. my_methods): the methods, regularisers, models, datasets, CAMs, "
      "mask rules and attacks they register become choices (and flags) like "
      "the built-in ones.", flag_values=flag_values)
  return import_plugins(argv if argv is not None else sys.argv, flag_values)


def import_plugins(argv, flag_values=absl_flags.FLAGS) -> list:
  """Imports the modules of `--plugins` in `argv` (flagfiles read too), from
  the current folder or the installed packages; returns their names.

  Raises:
    SystemExit: a plug-in that cannot be imported (one line).
  """
  import importlib  # pylint: disable=g-import-not-at-top
  names = []
  try:
    # The shipped configs as the parser will read them (a flagfile named
    # configs/NAME.cfg works from any folder).
    expanded = flag_values.read_flags_from_files(
        list(find_packaged_configs(argv)[1:]), force_gnu=False)
  except (absl_flags.Error, OSError, ValueError):
    # A flagfile that cannot be read (missing, not UTF-8): the parser says
    # so, in one line, when it reads the flags.
    return []
  for i, arg in enumerate(expanded):
    if arg == "--":
      break
    match = _PLUGINS.match(arg)
    if match:
      value = match.group(1)
      if value is None and i + 1 < len(expanded):
        value = expanded[i + 1]
      names = [n.strip() for n in (value or "").split(",") if n.strip()]
  if names and os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  for name in names:
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except
      sys.exit(f"error: --plugins: cannot import {name}: "
               f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
  return names


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
