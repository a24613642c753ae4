"""A run folder's promises: one writer at a time, and a state a run can trust.

* **Lock.** A run holds an exclusive `fcntl.flock` on `<model_dir>/.lock` for
  its whole life; the file names the holder (process, host, command, start).
  The kernel drops the lock when the process ends, however it ends, so a
  killed run never leaves the folder locked. A second process on the folder
  stops at once with an error naming the holder. (`flock` works on local
  file systems; on NFS it depends on the server.)
* **Identity.** The folder is the run, whatever path names it: relative,
  absolute, with a trailing `/`, moved or copied.
* **State.** `inspect` reads what the folder holds (settings, the backup
  pointer, the log) and `check_resume` refuses the starts that would lose or
  mislabel work: changed settings, fewer epochs than finished, a missing
  `config.json` or `backup/state.json` beside finished epochs. Every error is
  one line that names the file.
* **Its model.** `load_classifier` reads the classifier of a run folder (or
  of a `.keras` file) for the scripts that use a finished run.
"""

import contextlib
import csv
import dataclasses
import errno
import json
import os
import shutil
import socket
import sys
import time
import zipfile

try:
  import fcntl
except ImportError:  # pragma: no cover (not POSIX)
  fcntl = None

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
METRICS_FILE = "metrics.json"
BACKUP_DIR = "backup"
BEST_DIR = "best"
EXPORT_DIR = "export"
EXPORT_BEST_DIR = "export_best"
TENSORBOARD_DIR = "tensorboard"
NATURAL_CLASSIFIER_FILE = "natural_classifier.keras"
# Folders whose stale temporary entries (`.tmp-*`, `.old-*`, left by a kill
# during an atomic write) are removed when a run starts.
_WRITTEN_DIRS = ("", BACKUP_DIR, BEST_DIR, EXPORT_DIR, EXPORT_BEST_DIR)


class RunFolderError(ValueError):
  """A run folder cannot be used as asked; the message says why in a line."""


def _reason(e: OSError) -> str:
  return e.strerror or str(e)


# --- the lock ----------------------------------------------------------------

def _holder(fd: int) -> str:
  """Who holds the lock, from the lock file's contents."""
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    info = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
  except (OSError, ValueError):
    info = {}
  if not isinstance(info, dict) or "pid" not in info:
    return "another process"
  text = f"process {info['pid']}"
  if info.get("host") and info["host"] != socket.gethostname():
    text += f" on host {info['host']}"
  if info.get("command"):
    text += f" ({info['command']})"
  if info.get("started"):
    text += f", running since {info['started']}"
  return text


@contextlib.contextmanager
def locked(model_dir: str):
  """Creates `model_dir` if needed and holds its lock inside the block.

  Yields:
    True if this call created the folder.

  Raises:
    RunFolderError: the folder cannot be created or written, or another
      process holds its lock.
  """
  path = os.path.abspath(os.path.expanduser(model_dir))
  _check_link(path)
  created = not os.path.exists(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise RunFolderError(f"cannot create --model_dir {path}: {_reason(e)}"
                         ) from None
  if not os.path.isdir(path):
    raise RunFolderError(f"--model_dir {path} is not a folder")
  lock_path = os.path.join(path, LOCK_FILE)
  fd = _acquire(lock_path)
  try:
    check_no_links(path)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:300],
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, json.dumps(info).encode("utf-8"))
    except OSError as e:
      raise RunFolderError(f"cannot write in --model_dir {path}: "
                           f"{_reason(e)}") from None
    yield created
  finally:
    os.close(fd)  # releases the lock


def _check_link(path: str) -> None:
  """A `--model_dir` that is a link must lead to a folder (or to nothing
  yet made); a link loop or a dangling link is named as such."""
  if not os.path.islink(path):
    return
  try:
    os.stat(path)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise RunFolderError(f"--model_dir {path} is a symbolic link loop "
                           f"({path} -> {os.readlink(path)})") from None
    raise RunFolderError(
        f"--model_dir {path} is a symbolic link to {os.readlink(path)}, "
        "which does not exist") from None


def _acquire(lock_path: str) -> int:
  """Opens and locks `lock_path` (never through a link); returns the
  descriptor."""
  folder = os.path.dirname(lock_path)
  for _ in range(10):
    try:
      fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                   | os.O_CLOEXEC, 0o644)
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise RunFolderError(
            f"{lock_path} is a symbolic link: a run folder's lock must be "
            "its own file (part_tf never writes through links; remove the "
            "link)") from None
      raise RunFolderError(f"cannot write in --model_dir {folder}: "
                           f"{_reason(e)}") from None
    if fcntl is None:  # pragma: no cover
      return fd
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      raise RunFolderError(
          f"{folder} is in use by {holder}; wait for it to end, or use "
          "another --model_dir") from None
    except OSError as e:
      os.close(fd)
      raise RunFolderError(f"cannot lock --model_dir {folder}: "
                           f"{_reason(e)}") from None
    # The file may have been replaced between open and lock (a folder
    # removed and made again): only a lock on the current file counts.
    try:
      if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)
  raise RunFolderError(f"cannot lock --model_dir {folder}: its lock file "
                       "keeps changing")


# Entries of a run folder that a run writes or writes into: none may be a
# link (the folder itself may be).
_WRITTEN_ENTRIES = (CONFIG_FILE, LOG_FILE, METRICS_FILE, BACKUP_DIR,
                    BEST_DIR, EXPORT_DIR, EXPORT_BEST_DIR, TENSORBOARD_DIR,
                    "classifier.keras", NATURAL_CLASSIFIER_FILE,
                    "best_classifier.keras",
                    os.path.join(BACKUP_DIR, "state.json"),
                    os.path.join(BEST_DIR, "best.json"))


def check_no_links(model_dir: str) -> None:
  """RunFolderError naming the first symbolic link among the entries of
  `model_dir` that a run writes (its files, its folders and everything in
  `tensorboard/`): a run writes nothing outside its folder.
  """
  found = [os.path.join(model_dir, name) for name in _WRITTEN_ENTRIES
           if os.path.islink(os.path.join(model_dir, name))]
  board = os.path.join(model_dir, TENSORBOARD_DIR)
  if not found and os.path.isdir(board) and not os.path.islink(board):
    for folder, dirs, files in os.walk(board):
      found += [os.path.join(folder, n) for n in sorted(dirs + files)
                if os.path.islink(os.path.join(folder, n))]
  if found:
    raise RunFolderError(
        f"{found[0]} is a symbolic link: a run writes only files of its own "
        "in its folder, never through links (remove the link)")


# --- what the folder holds ---------------------------------------------------

@dataclasses.dataclass
class RunState:
  """What a run folder holds.

  Attributes:
    path: absolute path of the folder.
    config: the settings of `config.json`, or None if it is missing.
    backup_epoch: finished epochs of the last backup, or None if
      `backup/state.json` is missing.
    logged_epochs: 0-based epochs with a row in `log.csv`.
    evidence: files that show finished work (used to refuse a silent
      restart when `backup/state.json` is missing).
  """
  path: str
  config: dict | None
  backup_epoch: int | None
  logged_epochs: list
  evidence: list


def read_json(path: str, what: str):
  """Reads a JSON file; None if it is missing; RunFolderError if corrupt."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (ValueError, UnicodeDecodeError) as e:
    raise RunFolderError(f"corrupt {what} {path}: {e}") from None
  except OSError as e:
    raise RunFolderError(f"cannot read {what} {path}: {_reason(e)}") from None


def logged_epochs(path: str) -> list:
  """The 0-based epochs of `log.csv`'s rows ([] if there is no log).

  Raises:
    RunFolderError: a row whose first field is not an epoch number (e.g. a
      second header), naming the file and line.
  """
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
  except FileNotFoundError:
    return []
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise RunFolderError(f"cannot read the training log {path}: {e}"
                         ) from None
  epochs = []
  for number, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    try:
      epochs.append(int(row[0]))
    except ValueError:
      raise RunFolderError(
          f"bad row in the training log {path}, line {number}: expected an "
          f"epoch number first, found {row[0][:40]!r}") from None
  return epochs


def inspect(model_dir: str) -> RunState:
  """Reads the state of a run folder (missing files are not errors here).

  Raises:
    RunFolderError: a file that exists but is corrupt, named in the message.
  """
  # Imported here: checkpointing imports Keras, this module stays light.
  from part_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(model_dir))
  config = read_json(os.path.join(path, CONFIG_FILE), "run settings")
  if config is not None and not isinstance(config, dict):
    raise RunFolderError(f"corrupt run settings {path}/{CONFIG_FILE}: not a "
                         "JSON object")
  try:
    state = checkpointing.read_state(os.path.join(path, BACKUP_DIR))
  except ValueError as e:
    raise RunFolderError(str(e)) from None
  epochs = logged_epochs(os.path.join(path, LOG_FILE))
  evidence = []
  backup = os.path.join(path, BACKUP_DIR)
  if os.path.isdir(backup):
    evidence += sorted(os.path.join(BACKUP_DIR, n) for n in os.listdir(backup)
                       if n.endswith(".weights.h5"))
  if epochs:
    evidence.append(f"{LOG_FILE} with {len(epochs)} epoch rows")
  for name in (METRICS_FILE, "classifier.keras", "natural_classifier.keras",
               os.path.join(BEST_DIR, "best.json")):
    if os.path.exists(os.path.join(path, name)):
      evidence.append(name)
  return RunState(path=path, config=config,
                  backup_epoch=None if state is None else state["epoch"],
                  logged_epochs=epochs, evidence=evidence)


def check_resume(state: RunState, settings: dict, epochs: int,
                 resumable_changes=()) -> int:
  """The epoch a run resumes at, or RunFolderError if it must not start.

  Args:
    state: from `inspect`.
    settings: the new run's settings (JSON-able), compared with
      `config.json` once an epoch has finished.
    epochs: the new run's total epochs.
    resumable_changes: settings that may differ on a resume.

  Returns:
    Finished epochs to resume after (0 for a new run).
  """
  path = state.path
  if state.backup_epoch is None:
    if state.evidence:
      raise RunFolderError(
          f"{path}/{BACKUP_DIR}/state.json is missing, but the folder holds "
          f"a run ({', '.join(state.evidence[:4])}): starting over would "
          "overwrite it. Restore the file, or use another --model_dir")
    return 0
  done = state.backup_epoch
  if done == 0:  # nothing trained yet: the settings are not bound
    return 0
  if state.config is None:
    raise RunFolderError(
        f"{path}/{CONFIG_FILE} is missing, so the settings of the {done} "
        "finished epochs in this folder cannot be checked. Restore the file, "
        "or use another --model_dir")
  changed = [f"{k}: {state.config.get(k)!r} -> {v!r}"
             for k, v in settings.items()
             if k not in resumable_changes and state.config.get(k) != v]
  if changed:
    raise RunFolderError(
        f"{path} holds a run with other settings ({'; '.join(changed)}); "
        "pass the run's values (on the left) to resume it, or use another "
        "--model_dir")
  if epochs < done:
    raise RunFolderError(
        f"{path} holds a run that finished {done} epochs; --epochs={epochs} "
        f"would export and record it as a {epochs}-epoch model. Use "
        f"--epochs={done} to evaluate it again, more to train on, or another "
        "--model_dir")
  return done


def last_backup_epoch(model_dir: str) -> int | None:
  """The finished epochs of the folder's last complete backup (0: the run
  started, no epoch finished), or None: no run started there (or its
  backup state is unreadable)."""
  path = os.path.abspath(os.path.expanduser(model_dir))
  try:
    state = read_json(os.path.join(path, BACKUP_DIR, "state.json"),
                      "backup state")
    return int(state["epoch"]) if isinstance(state, dict) else None
  except (RunFolderError, KeyError, TypeError, ValueError):
    return None


def interrupted_line(model_dir: str, epochs: int) -> str:
  """The line a training run stopped by Ctrl-C ends with: where the same
  command goes on."""
  done = last_backup_epoch(model_dir)
  if done is None:
    return "interrupted before the first epoch; nothing was kept"
  if done >= epochs:
    return (f"interrupted after the last epoch ({done}), before the results "
            "were written; the same command evaluates and exports the run")
  return (f"interrupted at epoch {done + 1}; the same command resumes from "
          f"epoch {done + 1}")


def disk_full_line(model_dir: str, filename) -> str:
  """The one line of a run that ran out of disk space."""
  done = last_backup_epoch(model_dir)
  where = f" while writing {filename}" if filename else ""
  backup = ("no epoch is backed up yet" if not done else
            f"the last complete backup is epoch {done}")
  return f"no space left on device{where}; {backup}"


# --- the folder as an object -----------------------------------------------------

class RunFolder:
  """A run folder: where everything of a run goes, and every write to it.

    .lock              who is using the folder (an flock while they are)
    config.json        the settings (a resumed run must match them)
    backup/            resumable epoch-end backups (weights, optimiser, epoch)
    log.csv            one row per epoch (loss, adv_accuracy, eps_mean, ...)
    tensorboard/       the same as TensorBoard events, PART's pictures
                       (pictures/) and the run's hparams entry (hparams/)
    classifier.keras   the trained classifier (the robust one for ACT)
    natural_classifier.keras  ACT's natural model
    export/<epochs>/   SavedModel of the last epoch's classifier
    best/              backups of the most robust epoch's classifier,
                       chosen on the validation split
    best_classifier.keras   that classifier, once training ends
    export_best/<epoch>/    its SavedModel: point TF Serving at export_best/
    metrics.json       the final and the best model's accuracy

  Args:
    path: the run folder (`--model_dir`).
    write_path: where this process writes: the folder itself, or, on a
      worker other than the chief of a multi-worker job, a private copy of
      its backups that is removed at the end.
  """

  def __init__(self, path: str, write_path: str | None = None):
    self.path = os.path.abspath(os.path.expanduser(path))
    self.write_path = os.path.abspath(write_path or self.path)

  @property
  def is_chief(self) -> bool:
    """Whether this process writes the folder itself."""
    return self.write_path == self.path

  def _in(self, *parts):
    return os.path.join(self.write_path, *parts)

  @property
  def backup_dir(self):
    return self._in(BACKUP_DIR)

  @property
  def best_dir(self):
    return self._in(BEST_DIR)

  @property
  def tensorboard_dir(self):
    return self._in(TENSORBOARD_DIR)

  @property
  def log_path(self):
    return self._in(LOG_FILE)

  @property
  def metrics_path(self):
    return self._in(METRICS_FILE)

  def classifier_path(self, which: str = "final") -> str:
    """The classifier file: "final", "best" or "natural" (ACT)."""
    return self._in({**CLASSIFIER_FILES,
                     "natural": NATURAL_CLASSIFIER_FILE}[which])

  def export_path(self, version, best: bool = False) -> str:
    """export/<version>/ (or export_best/<version>/): a TF Serving layout."""
    return self._in(EXPORT_BEST_DIR if best else EXPORT_DIR, str(version))

  def relative(self, path: str) -> str:
    return os.path.relpath(path, self.write_path)

  # --- reading ---------------------------------------------------------------

  def inspect(self) -> RunState:
    return inspect(self.path)

  def read_best(self):
    """The best-robust checkpoint of best/, or None (see
    `part_tf.training.robust_evaluation.read_best`)."""
    from part_tf.training import robust_evaluation  # pylint: disable=g-import-not-at-top
    return robust_evaluation.read_best(self.best_dir)

  # --- writing ---------------------------------------------------------------

  def prepare(self, export: bool) -> list:
    """Makes the folders a run writes into (best/ is made when a validation
    split keeps a best epoch) and checks they are writable; returns the
    ones it made, which a start that fails removes again."""
    if self.is_chief:
      remove_stale_temporaries(self.path)
    folders = [self.write_path, self.backup_dir, self.tensorboard_dir]
    if export:
      folders.append(self._in(EXPORT_DIR))
      if os.path.isdir(self._in(EXPORT_BEST_DIR)):
        folders.append(self._in(EXPORT_BEST_DIR))
    made = []
    for folder in folders:
      if not os.path.isdir(folder):
        made.append(folder)
      check_writable(folder)
    return made

  def start(self, values: dict, state: RunState, start_epoch: int) -> None:
    """From here on the folder holds this run: its settings, the backup
    state of a new run, and a log without the rows a resume redoes."""
    from part_tf import io_utils  # pylint: disable=g-import-not-at-top
    from part_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
    io_utils.atomic_write_json(self._in(CONFIG_FILE), values)
    if state.backup_epoch is None or not os.path.exists(
        os.path.join(self.backup_dir, "state.json")):
      checkpointing.start_backups(self.backup_dir)
    self.drop_log_rows_from(start_epoch)

  def drop_log_rows_from(self, epoch: int) -> None:
    """Keeps the rows of epochs before `epoch`: the ones a resume won't
    redo (the CSV row of an epoch is written before its backup, so a kill in
    between leaves a row that the resumed run writes again). Every line
    ends in LF (older versions wrote CRLF)."""
    from part_tf import io_utils  # pylint: disable=g-import-not-at-top
    path = self.log_path
    if not os.path.exists(path):
      return
    epochs = logged_epochs(path)  # checks every row
    with open(path, encoding="utf-8", newline="") as f:
      text = f.read()
    lines = [line + "\n" for line in text.splitlines()]
    rows = [line for line in lines[1:] if line.strip()]
    kept = lines[:1] + [line for line, e in zip(rows, epochs) if e < epoch]
    if epoch == 0:
      kept = []
    if "".join(kept) != text:
      io_utils.atomic_write_text(path, "".join(kept))

  def save_classifier(self, model, which: str = "final") -> str:
    """Saves a Keras model as the `which` classifier file, atomically."""
    from part_tf import io_utils  # pylint: disable=g-import-not-at-top
    path = self.classifier_path(which)
    io_utils.atomic_file(path, model.save)
    return path

  def export(self, classifier, version, names, best: bool = False) -> str:
    """The classifier's SavedModel at export/<version>/ (or, for the most
    robust epoch, export_best/<version>/, keeping no other epoch there)."""
    from part_tf.export import export_classifier  # pylint: disable=g-import-not-at-top
    target = export_classifier(classifier, self.export_path(version, best),
                               names)
    if best:
      self.prune_export_best(version)
    return target

  def prune_export_best(self, epoch) -> None:
    """Removes the exports in export_best/ of epochs other than `epoch`."""
    base = self._in(EXPORT_BEST_DIR)
    if os.path.isdir(base):
      for name in os.listdir(base):
        if name.isdigit() and name != str(epoch):
          shutil.rmtree(os.path.join(base, name), ignore_errors=True)

  def write_metrics(self, metrics: dict) -> None:
    from part_tf import io_utils  # pylint: disable=g-import-not-at-top
    io_utils.atomic_write_json(self.metrics_path, metrics)


# --- the trained classifier ----------------------------------------------------

# The classifier files of a run folder, by `checkpoint`.
CLASSIFIER_FILES = {"final": "classifier.keras",
                    "best": "best_classifier.keras"}


def load_classifier(path: str, checkpoint: str = "final"):
  """The Keras classifier of a run folder or a `.keras` file.

  Args:
    path: a run folder or a `.keras` file.
    checkpoint: for a run folder, "final" (the last epoch's classifier) or
      "best" (the most robust epoch on the validation split).

  Returns:
    (classifier, the run's settings or {} for a bare `.keras` file, the
    folder results go to by default: the run folder, or the file's folder).

  Raises:
    FileNotFoundError: a run folder without `classifier.keras`, or no path.
    ValueError: a corrupt `config.json`, a file that is not a `.keras`
      archive, or one that Keras cannot load; the message names the file.
  """
  import keras  # pylint: disable=g-import-not-at-top
  run, keras_file = {}, path
  output = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    run = read_json(os.path.join(path, CONFIG_FILE), "run settings") or {}
    if not isinstance(run, dict):
      raise RunFolderError(f"corrupt run settings {path}/{CONFIG_FILE}: not "
                           "a JSON object")
    if checkpoint not in CLASSIFIER_FILES:
      raise ValueError(f"checkpoint must be one of "
                       f"{', '.join(CLASSIFIER_FILES)}, not {checkpoint!r}")
    name = CLASSIFIER_FILES[checkpoint]
    keras_file, output = os.path.join(path, name), path
    if not os.path.exists(keras_file):
      if checkpoint == "best":
        raise FileNotFoundError(
            f"{path} has no {name}: the most robust epoch is chosen on a "
            "validation split, at the end of a run trained with "
            "--eval_every=N (and --validation_split not 0)")
      raise FileNotFoundError(f"{path} has no {name} (is it a "
                              "finished run folder?)")
  elif checkpoint != "final":
    raise ValueError(f"--checkpoint={checkpoint} needs a run folder; "
                     f"{path} is a file")
  elif not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist")
  if not keras_file.endswith(".keras"):
    raise ValueError(f"{path} is neither a run folder nor a .keras file")
  if not zipfile.is_zipfile(keras_file):
    raise ValueError(f"{keras_file} is not a valid .keras file (not a zip "
                     "archive: truncated or corrupt?)")
  try:
    classifier = keras.saving.load_model(keras_file)
  except Exception as e:  # pylint: disable=broad-except
    detail = " ".join(str(e).split())[:300] or type(e).__name__
    raise ValueError(f"cannot load the model {keras_file}: {detail}"
                     ) from None
  return classifier, run, output


# --- housekeeping --------------------------------------------------------------

def remove_stale_temporaries(model_dir: str) -> list:
  """Removes `.tmp-*` / `.old-*` entries that a killed atomic write left.

  Only call it while holding the folder's lock. Returns the removed paths.
  """
  removed = []
  for sub in _WRITTEN_DIRS:
    folder = os.path.join(model_dir, sub)
    if not os.path.isdir(folder):
      continue
    for name in os.listdir(folder):
      if name.startswith((".tmp-", ".old-")):
        target = os.path.join(folder, name)
        if os.path.isdir(target) and not os.path.islink(target):
          shutil.rmtree(target, ignore_errors=True)
        else:
          with contextlib.suppress(FileNotFoundError):
            os.remove(target)
        removed.append(target)
  return removed


def check_writable(folder: str) -> None:
  """Creates `folder` if needed and checks that files can be written there.

  Raises:
    RunFolderError: naming the folder and the reason.
  """
  try:
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".tmp-{os.getpid()}-probe")
    with open(probe, "w", encoding="utf-8") as f:
      f.write("probe")
    os.remove(probe)
  except OSError as e:
    raise RunFolderError(f"cannot write in {folder}: {_reason(e)}") from None
