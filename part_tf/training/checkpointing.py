"""Resumable training: an epoch-end backup that a crash cannot corrupt.

Keras' `BackupAndRestore` overwrites its weights file in place and writes the
epoch counter separately, so a kill at the wrong moment leaves a torn file or
weights one epoch ahead of the counter. Here each backup is written to a new
file, renamed into place, and only then made current by atomically replacing
a small `state.json` that names it; older backups are deleted afterwards.
The backup holds the model weights (with the `part_active` switch) and the
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

  Raises:
    ValueError: the state is corrupt or names a missing weights file.
  """
  path = os.path.join(folder, state_file)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      state = json.load(f)
    values = {name: cast(state[name]) for name, cast in fields.items()}
    values["weights"] = str(state["weights"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"corrupt {what} state {path}: {e}") from None
  if not os.path.exists(os.path.join(folder, values["weights"])):
    raise ValueError(f"{what} state {path} names {values['weights']}, which "
                     "is missing")
  return values


def write_checkpoint(folder: str, state_file: str, name: str, save_fn,
                     fields: dict) -> None:
  """Writes weights `name` with `save_fn`, then points `state_file` at them.

  Both writes are atomic and the state is replaced only once the weights are
  complete; the folder's other weights files are removed afterwards.
  """
  io_utils.atomic_file(os.path.join(folder, name), save_fn)
  io_utils.atomic_write_json(os.path.join(folder, state_file),
                             {**fields, "weights": name})
  for old in os.listdir(folder):
    if old.endswith(".weights.h5") and old != name:
      os.remove(os.path.join(folder, old))


def read_state(backup_dir: str):
  """Returns `{"epoch": int, "weights": file name}` or None if no backup."""
  return read_checkpoint_state(backup_dir, STATE_FILE, {"epoch": int},
                               "backup")


def restored_epoch(backup_dir: str) -> int:
  """The epoch a run in `backup_dir` resumes at (0 for a new run)."""
  state = read_state(backup_dir)
  return state["epoch"] if state else 0


def restore(model, backup_dir: str) -> int:
  """Loads the last backup into `model` (and its optimiser).

  Returns:
    The number of finished epochs the backup holds (0 if there is none).
  """
  state = read_state(backup_dir)
  if state is None:
    return 0
  if model.optimizer is not None and not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  model.load_weights(os.path.join(backup_dir, state["weights"]))
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
                     self.model.save_weights, {"epoch": epoch + 1})
