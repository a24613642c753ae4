"""Keras callbacks of a PART run: the burn-in switch, and one copy of the
batch-norm statistics for all replicas."""

import keras
from absl import logging

from part_tf import distribution


class BurnInSwitch(keras.callbacks.Callback):
  """Turns the CAM budgets on at epoch `burn_in_epochs` (0-based).

  Sets `model.part_active` at the start of every epoch from the epoch index
  alone, so the state is right after a resume too (and it is also saved with
  the weights). Flipping a variable does not retrace the compiled step.

  Args:
    burn_in_epochs: number of epochs trained with the uniform budget.
  """

  def __init__(self, burn_in_epochs: int):
    super().__init__()
    if burn_in_epochs < 0:
      raise ValueError(f"burn_in_epochs must be >= 0, got {burn_in_epochs}")
    self.burn_in_epochs = burn_in_epochs

  def on_train_begin(self, logs=None):
    if not hasattr(self.model, "part_active"):
      raise ValueError("BurnInSwitch switches the budgets of a "
                       "part_tf.training.PARTModel; the model being trained "
                       f"is a {type(self.model).__name__}")

  def on_epoch_begin(self, epoch, logs=None):
    active = int(epoch >= self.burn_in_epochs)
    # The base methods (at, trades, mart) have the switch too, but it changes
    # nothing for them: say so only where it does.
    if (getattr(self.model, "reweighted", True)
        and int(self.model.part_active.numpy()) != active):
      logging.info("epoch %d: pixel-reweighted budgets %s", epoch + 1,
                   "on" if active else "off")
    self.model.part_active.assign(active)


class SyncReplicaCopies(keras.callbacks.Callback):
  """Gives all replicas the first replica's batch-norm statistics at the
  start of every epoch (see `distribution.broadcast_first_replica`).

  Each replica updates its own copy during an epoch; the CAMs and attacks
  read it in inference mode. Starting every epoch from the copy that
  checkpoints hold makes a resumed run equal an uninterrupted one. A no-op
  with one replica.
  """

  def on_epoch_begin(self, epoch, logs=None):
    model = getattr(self.model, "classifier", self.model)
    distribution.broadcast_first_replica(model.non_trainable_variables,
                                         self.model.distribute_strategy)
