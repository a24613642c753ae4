"""The learning rate per epoch: the PART reference code's schedule, and the
rate of every epoch in the logs (log.csv's `learning_rate` column)."""

from typing import Callable, Sequence

import keras

LOG_KEY = "learning_rate"


def reference_rate(epoch: int, learning_rate: float, burn_in_epochs: int,
                   decay_epochs: Sequence[int],
                   decay_factor: float = 0.1) -> float:
  """The rate of 0-based `epoch` under the reference code's schedule.

  The reference trains its burn-in ("warm-up") epochs at the initial rate,
  then counts the PART epochs from 1 and, before each, multiplies the
  initial rate by `decay_factor` once for every one of its two epochs
  (`--adjust-first`, `--adjust-second`: 60 and 90) that the PART epoch has
  reached. With 80 epochs and 20 of burn-in that is epochs 1 to 79 at the
  initial rate and the 80th at a tenth of it.

  Args:
    epoch: 0-based epoch of the whole run, burn-in included.
    learning_rate: the initial rate.
    burn_in_epochs: epochs before the first PART epoch.
    decay_epochs: PART epochs (counted from 1 after burn-in) from which the
      rate is multiplied by `decay_factor` once more.
    decay_factor: the multiplier.

  Returns:
    The rate of every update of that epoch.
  """
  if epoch < burn_in_epochs:
    return learning_rate
  part_epoch = epoch - burn_in_epochs + 1
  reached = sum(1 for e in decay_epochs if part_epoch >= int(e))
  return learning_rate * decay_factor ** reached


class EpochLearningRate(keras.callbacks.Callback):
  """Sets the learning rate at the start of every epoch from a per-epoch
  rule (if given), and puts the epoch's rate into the epoch's logs under
  `LOG_KEY` (if `log`), for the CSV logger behind it.

  The rule's rate is assigned to the optimiser's rate variable before the
  epoch's first update, so the rate is constant within an epoch and follows
  the epoch index alone: a resumed run continues the schedule. The logged
  rate is the optimiser's at the end of the epoch: that of all its updates
  under a per-epoch rule or a constant rate (a schedule of the step, such as
  cosine, gives the rate it has reached).

  Args:
    rule: 0-based epoch -> rate, or None to leave the optimiser's rate (or
      its schedule) alone.
    log: whether to log the rate.
  """

  def __init__(self, rule: Callable[[int], float] | None = None,
               log: bool = True):
    super().__init__()
    self.rule = rule
    self.log = log

  def on_epoch_begin(self, epoch, logs=None):
    if self.rule is not None:
      self.model.optimizer.learning_rate = float(self.rule(epoch))

  def on_epoch_end(self, epoch, logs=None):
    if self.log and logs is not None:
      rate = float(
          keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
      # The rate variable is float32: its 7 significant digits (0.001, not
      # 0.0010000000474974513).
      logs[LOG_KEY] = float(f"{rate:.7g}")
