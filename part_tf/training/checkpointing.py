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


def read_state(backup_dir: str):
  """Returns `{"epoch": int, "weights": file name}` or None if no backup."""
  path = os.path.join(backup_dir, STATE_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      state = json.load(f)
    epoch, weights = int(state["epoch"]), str(state["weights"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"corrupt backup state {path}: {e}") from None
  if not os.path.exists(os.path.join(backup_dir, weights)):
    raise ValueError(f"backup state {path} names {weights}, which is missing")
  return {"epoch": epoch, "weights": weights}


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
    name = f"epoch-{epoch + 1:04d}.weights.h5"
    io_utils.atomic_file(os.path.join(self.backup_dir, name),
                         self.model.save_weights)
    io_utils.atomic_write_json(os.path.join(self.backup_dir, STATE_FILE),
                               {"epoch": epoch + 1, "weights": name})
    for old in os.listdir(self.backup_dir):
      if old.endswith(".weights.h5") and old != name:
        os.remove(os.path.join(self.backup_dir, old))
