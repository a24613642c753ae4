"""The optimiser and its learning rate: the schedules (the PART reference
code's per epoch among them), and the rate of every epoch in the logs
(log.csv's `learning_rate` column)."""

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


def optimizer(config, burn_in_epochs: int, steps_per_epoch: int):
  """The Keras optimiser of an `OptimizerConfig` (weight decay is the
  model's, see `PARTModel`)."""
  rate = _rate(config, steps_per_epoch)
  if config.optimizer == "sgd":
    return keras.optimizers.SGD(rate, momentum=config.momentum)
  if config.optimizer == "adam":
    return keras.optimizers.Adam(rate)
  raise ValueError(f"unknown optimizer {config.optimizer!r}")


def _rate(config, steps_per_epoch):
  """The optimiser's rate: a number, or a schedule of the step."""
  if config.lr_schedule in ("constant", "reference"):
    return config.learning_rate  # reference: set per epoch by `epoch_rule`
  if config.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch)
  epochs = sorted(int(e) for e in config.lr_decay_epochs)
  if not epochs:
    return config.learning_rate
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      boundaries=[e * steps_per_epoch for e in epochs],
      values=[config.learning_rate * config.lr_decay_factor ** i
              for i in range(len(epochs) + 1)])


def epoch_rule(config, burn_in_epochs: int):
  """0-based epoch -> rate of a schedule set per epoch (reference), else
  None."""
  if config.lr_schedule != "reference":
    return None
  decay_epochs = tuple(int(e) for e in config.lr_decay_epochs)
  return lambda epoch: reference_rate(
      epoch, config.learning_rate, burn_in_epochs, decay_epochs,
      config.lr_decay_factor)


def decay_note(config, burn_in_epochs: int) -> str | None:
  """A note when decay epochs lie beyond the run, or None."""
  count = lambda n, what: f"{n} {what}" + ("" if n == 1 else "s")
  if config.lr_schedule == "piecewise":
    late = [e for e in config.lr_decay_epochs if int(e) >= config.epochs]
    if late:
      return (f"note: the learning rate does not decay after epoch"
              f"{'s' if len(late) > 1 else ''} "
              f"{','.join(str(e) for e in late)} within "
              f"{count(config.epochs, 'epoch')} (--lr_decay_epochs)")
  if config.lr_schedule == "reference":
    part_epochs = config.epochs - burn_in_epochs
    late = [e for e in config.lr_decay_epochs if int(e) > part_epochs]
    if late:
      return (f"note: --lr_schedule=reference counts the decay epochs "
              f"after the {count(burn_in_epochs, 'burn-in epoch')}:"
              f" the rate does not decay at PART epoch"
              f"{'s' if len(late) > 1 else ''} "
              f"{','.join(str(e) for e in late)} of {part_epochs} "
              "(--lr_decay_epochs)")
  return None


def logs_rate(log_path: str) -> bool:
  """Whether a run's log.csv gets the learning-rate column: a new (or
  empty) log does; the log of a run resumed from before the column existed
  keeps its header, so its rows keep their columns."""
  try:
    with open(log_path, encoding="utf-8") as f:
      header = f.readline()
  except FileNotFoundError:
    return True
  return not header.strip() or LOG_KEY in header.strip().split(",")
