"""What a training run prints: one line per epoch, and on a terminal a
progress line during long epochs."""

import math
import sys
import time

import keras

# Epoch-log keys in print order; any others follow.
_ORDER = ("loss", "adv_accuracy", "eps_mean", "full_eps_fraction", "val_loss",
          "val_accuracy", "val_pgd_accuracy", "learning_rate")
# Keys printed in significant digits (1e-05, not 0.0000).
_SIGNIFICANT = ("learning_rate",)


def format_logs(logs: dict) -> str:
  """`name value` pairs, in a fixed order; NaN (not measured) is left out."""
  names = [n for n in _ORDER if n in logs] + sorted(
      n for n in logs if n not in _ORDER)
  parts = []
  for name in names:
    value = logs[name]
    try:
      value = float(value)
    except (TypeError, ValueError):
      continue
    if not math.isnan(value):
      parts.append(f"{name} {value:.4g}" if name in _SIGNIFICANT
                   else f"{name} {value:.4f}")
  return "  ".join(parts)


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds} s"
  minutes, seconds = divmod(seconds, 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else (
      f"{minutes}:{seconds:02d}")


class EpochLog(keras.callbacks.Callback):
  """Prints `epoch 3/80  loss 1.2345  adv_accuracy 0.5312 ... (41 s)` after
  each epoch. When the stream is a terminal and an epoch has run for more
  than `show_after` seconds, a progress line (step, loss, time left) is
  redrawn in place during the epoch. Put it after callbacks that add to the
  epoch logs (e.g. `RobustEvaluation`).

  Args:
    stream: where to print (default: `sys.stdout`).
    show_after: seconds into an epoch before the progress line appears.
    redraw_every: minimum seconds between redraws.
  """

  def __init__(self, stream=None, show_after: float = 3.0,
               redraw_every: float = 0.5):
    super().__init__()
    self.stream = stream
    self.show_after = show_after
    self.redraw_every = redraw_every
    self._start = self._drawn = 0.0
    self._shown = False

  def _out(self):
    return self.stream or sys.stdout

  def _is_terminal(self) -> bool:
    isatty = getattr(self._out(), "isatty", None)
    return bool(isatty and isatty())

  def on_epoch_begin(self, epoch, logs=None):
    self._start = self._drawn = time.time()
    self._shown = False

  def on_train_batch_end(self, batch, logs=None):
    now = time.time()
    if (now - self._start < self.show_after
        or now - self._drawn < self.redraw_every
        or not self._is_terminal()):
      return
    self._drawn = now
    steps = self.params.get("steps")
    done = batch + 1
    text = f"  step {done}" + (f"/{steps}" if steps else "")
    if logs and "loss" in logs:
      text += f"  loss {float(logs['loss']):.4f}"
    if steps:
      text += f"  {_duration((now - self._start) / done * (steps - done))} left"
    self._out().write("\r" + text + "\x1b[K")
    self._out().flush()
    self._shown = True

  def on_epoch_end(self, epoch, logs=None):
    out = self._out()
    if self._shown:
      out.write("\r\x1b[K")
    epochs = self.params.get("epochs")
    line = f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else "")
    out.write(f"{line}  {format_logs(logs or {})}  "
              f"({_duration(time.time() - self._start)})\n")
    out.flush()
