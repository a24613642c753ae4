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


def _count(n, what):
  return f"{n} {what}" + ("" if n == 1 else "s")


def settings_line(config, model_dir: str, where: str) -> str:
  """The first line of a run: what it trains, how, and where."""
  method = config.method_name
  budget = config.budget
  if config.method.reweighted:
    method += (f" (epsilon {budget.epsilon:.4g}, epsilon_low "
               f"{budget.epsilon_low:.4g}, {budget.cam} CAM, "
               f"{budget.mask_rule} mask, "
               f"{_count(budget.burn_in_epochs, 'burn-in epoch')})")
  else:
    method += f" (epsilon {budget.epsilon:.4g})"
  hyper = [f"{name} {value:g}" if isinstance(value, float) else
           f"{name} {value}" for name, value in config.method.settings().items()
           if value is not None]
  if hyper:
    method += f" with {', '.join(hyper)}"
  if config.regularisers:
    method += " + " + ", ".join(f"{r.registered_name()} {r.weight:g}"
                                for r in config.regularisers)
  d, a, o = config.data, config.attack, config.optimizer
  return (f"training {config.model.model} on {d.dataset} with {method}, "
          f"PGD-{a.num_steps} step {a.step_size:.4g}, "
          f"{_count(o.epochs, 'epoch')} of batch {d.batch_size}, "
          f"{o.optimizer} lr {o.learning_rate:g}, seed {config.run.seed}, "
          f"{where}, in {model_dir}")


def where_line(kind: str, replicas: int, workers: int = 1) -> str:
  """Where a run trains: "on one device", "mirrored over 2 replicas"..."""
  if kind == "one_device":
    return "on one device"
  if kind == "multi_worker":
    return (f"on {_count(workers, 'worker')} "
            f"({_count(replicas, 'replica')})")
  return f"{kind} over {_count(replicas, 'replica')}"


def results_line(metrics: dict, steps: int) -> str:
  """The test results of a run (and of its most robust epoch, and ACT's
  natural model)."""
  line = (f"test: natural accuracy {metrics['natural_accuracy']:.4f}, "
          f"PGD-{steps} accuracy {metrics[f'pgd{steps}_accuracy']:.4f} "
          f"({metrics['num_test_examples']} examples, epsilon "
          f"{metrics['epsilon']:.4g})")
  best = metrics.get("best")
  if best:
    line += (f"; most robust epoch {best['epoch']}: natural "
             f"{best['natural_accuracy']:.4f}, PGD-{steps} "
             f"{best[f'pgd{steps}_accuracy']:.4f}")
  natural = metrics.get("natural_model")
  if natural:
    line += (f"; natural model: natural {natural['natural_accuracy']:.4f}, "
             f"PGD-{steps} {natural[f'pgd{steps}_accuracy']:.4f}")
  return line
