"""Keras callbacks of a PART run: one copy of the batch-norm statistics for
all replicas, and the burn-in switch of earlier versions (deprecated)."""

import dataclasses
import warnings

import keras

from part_tf import distribution


class BurnInSwitch(keras.callbacks.Callback):
  """Deprecated: `PARTModel(burn_in_epochs=...)` switches the budgets itself.

  Kept so that code written for earlier versions runs: it sets the model's
  `burn_in_epochs` before the first step, with a DeprecationWarning.

  Args:
    burn_in_epochs: number of epochs trained with the uniform budget.
  """

  def __init__(self, burn_in_epochs: int):
    super().__init__()
    if burn_in_epochs < 0:
      raise ValueError(f"burn_in_epochs must be >= 0, got {burn_in_epochs}")
    self.burn_in_epochs = burn_in_epochs

  def on_train_begin(self, logs=None):
    if not hasattr(self.model, "budget_config"):
      raise ValueError("BurnInSwitch switches the budgets of a "
                       "part_tf.training.PARTModel; the model being trained "
                       f"is a {type(self.model).__name__}")
    warnings.warn("BurnInSwitch is deprecated: pass burn_in_epochs to "
                  "PARTModel, which counts its epochs itself",
                  DeprecationWarning, stacklevel=2)
    self.model.budget_config = dataclasses.replace(
        self.model.budget_config, burn_in_epochs=self.burn_in_epochs)


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
