"""Resumable training: an epoch-end backup that a crash cannot corrupt.

Keras' `BackupAndRestore` overwrites its weights file in place and writes the
epoch counter separately, so a kill at the wrong moment leaves a torn file or
weights one epoch ahead of the counter. Here each backup is written to a new
file, renamed into place, and only then made current by atomically replacing
a small `state.json` that names it; older backups are deleted afterwards.
The backup holds the model weights (with the model's epoch counter) and the
optimiser state (moments and step counter, which also seeds the attacks).
"""

import json
import os

import keras

from part_tf import io_utils

STATE_FILE = "state.json"


def read_checkpoint_state(folder: str, state_file: str, fields: dict,
                          what: str):
  """Reads `folder/state_file`, the pointer to a folder's current weights.

  Args:
    folder: the checkpoint folder.
    state_file: name of the JSON state in it.
    fields: `{name: type}` of the values the state must hold besides
      `weights` (the weights file name).
    what: what the checkpoint is, for error messages.

  Returns:
    `{**fields, "weights": file name}`, or None if there is no state yet.
    `weights` is None in a state that points at no weights yet (a run that
    has started but not finished an epoch).

  Raises:
    ValueError: the state is corrupt, names something that is not a plain
      weights file name (e.g. with `..`), or names a missing file.
  """
  path = os.path.join(folder, state_file)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      state = json.load(f)
    values = {name: cast(state[name]) for name, cast in fields.items()}
    weights = state["weights"]
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"corrupt {what} state {path}: {e!r}") from None
  except OSError as e:
    raise ValueError(f"cannot read {what} state {path}: {e.strerror}"
                     ) from None
  if weights is None:
    values["weights"] = None
    return values
  if (not isinstance(weights, str) or os.path.basename(weights) != weights
      or not weights.endswith(".weights.h5") or weights.startswith(".")):
    raise ValueError(f"corrupt {what} state {path}: {weights!r} is not the "
                     "name of a weights file in that folder")
  values["weights"] = weights
  if not os.path.exists(os.path.join(folder, weights)):
    raise ValueError(f"{what} state {path} names {weights}, which is missing")
  return values


def load_weights(model, path: str, what: str) -> None:
  """`model.load_weights(path)`, with a one-line ValueError naming the file
  if it is truncated, corrupt or of another model."""
  try:
    model.load_weights(path)
  except (OSError, ValueError, KeyError, TypeError) as e:
    detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f"{what} {path} cannot be loaded: the file is truncated,"
                     f" corrupt or of another model ({detail})") from None


def write_checkpoint(folder: str, state_file: str, name: str, model,
                     fields: dict) -> None:
  """Writes `model`'s weights as `name`, then points `state_file` at them.

  Both writes are atomic and the state is replaced only once the weights are
  complete; the folder's other weights files are removed afterwards. A full
  disk is an OSError naming the file, and leaves the folder as it was.
  """
  io_utils.atomic_save_weights(model, os.path.join(folder, name))
  io_utils.atomic_write_json(os.path.join(folder, state_file),
                             {**fields, "weights": name})
  for old in os.listdir(folder):
    if old.endswith(".weights.h5") and old != name:
      os.remove(os.path.join(folder, old))


def read_state(backup_dir: str):
  """Returns `{"epoch": int, "weights": file name or None}`, or None if there
  is no backup state."""
  return read_checkpoint_state(backup_dir, STATE_FILE, {"epoch": int},
                               "backup")


def start_backups(backup_dir: str) -> None:
  """Marks a new run as started: a state of epoch 0 without weights.

  From then on a missing `state.json` means a damaged folder, not a new run.
  """
  io_utils.atomic_write_json(os.path.join(backup_dir, STATE_FILE),
                             {"epoch": 0, "weights": None})


def restore(model, backup_dir: str) -> int:
  """Loads the last backup into `model` (and its optimiser).

  Returns:
    The number of finished epochs the backup holds (0 if there is none).
  """
  state = read_state(backup_dir)
  if state is None or state["weights"] is None:
    return 0
  if model.optimizer is not None and not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  load_weights(model, os.path.join(backup_dir, state["weights"]),
               "backup weights")
  return state["epoch"]


class AtomicBackupAndRestore(keras.callbacks.Callback):
  """Restores the last finished epoch at train start; backs up at epoch end.

  Args:
    backup_dir: folder for the backups (created when needed).
  """

  def __init__(self, backup_dir: str):
    super().__init__()
    self.backup_dir = backup_dir

  def on_train_begin(self, logs=None):
    epoch = restore(self.model, self.backup_dir)
    if epoch:
      self.model._initial_epoch = epoch  # pylint: disable=protected-access

  def on_epoch_end(self, epoch, logs=None):
    write_checkpoint(self.backup_dir, STATE_FILE,
                     f"epoch-{epoch + 1:04d}.weights.h5",
                     self.model, {"epoch": epoch + 1})
