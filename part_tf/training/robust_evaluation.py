"""The PGD accuracy of the held-out images while a run trains, and the
most robust epoch's checkpoint."""

import keras

from part_tf import evaluation
from part_tf.training import checkpointing

BEST_STATE = "best.json"


def read_best(best_dir: str):
  """`{"epoch", "val_pgd_accuracy", "weights" (a path)}` of the best-robust
  checkpoint in `best_dir`, or None."""
  import os  # pylint: disable=g-import-not-at-top
  best = checkpointing.read_checkpoint_state(
      best_dir, BEST_STATE, {"epoch": int, "val_pgd_accuracy": float},
      "best-checkpoint")
  if best is not None:
    best["weights"] = os.path.join(best_dir, best["weights"])
  return best


class RobustEvaluation(keras.callbacks.Callback):
  """Logs PGD robust accuracy on fixed held-out data (the run's validation
  split) every N epochs, and keeps the classifier of the most robust
  evaluated epoch.

  Adds `val_pgd_accuracy` (NaN on epochs that are not evaluated, so CSV logs
  keep one column) to the epoch logs; put it before loggers in the list.
  The accuracy is `part_tf.evaluation`'s, as in `metrics.json` and
  `evaluate.py`. Robust overfitting is real: with `best_dir`, the weights of
  the epoch with the highest `val_pgd_accuracy` so far (the later epoch on a
  tie) are written to `best_dir/best-epoch-NNNN.weights.h5`, made current by
  `best.json` (both written atomically, and read back when a run resumes).

  Args:
    dataset: fixed evaluation batches (images in [0, 1], labels).
    every_n_epochs: evaluate after every N-th epoch and after the last one.
    epsilon, step_size, num_steps, seed, jit_compile: the attack (see
      `evaluation.robust_accuracy`).
    best_dir: where to keep the best-robust checkpoint (None: don't).
  """

  def __init__(self, dataset, every_n_epochs, epsilon, step_size,
               num_steps=20, seed=0, jit_compile=False, best_dir=None):
    super().__init__()
    self.dataset = dataset
    self.every_n_epochs = every_n_epochs
    self.config = evaluation.SuiteConfig(num_steps=num_steps,
                                         step_size=step_size)
    self.epsilon, self.seed, self.jit_compile = epsilon, seed, jit_compile
    self.best_dir = best_dir
    self._evaluator = None
    self._best = -1.0

  def on_train_begin(self, logs=None):
    best = read_best(self.best_dir) if self.best_dir else None
    self._best = best["val_pgd_accuracy"] if best else -1.0

  def on_epoch_end(self, epoch, logs=None):
    if logs is None:
      return
    last = epoch + 1 == self.params.get("epochs")
    due = self.every_n_epochs > 0 and (epoch + 1) % self.every_n_epochs == 0
    value = float("nan")
    if due or last:
      value = self._evaluate()
      # A tie goes to the later epoch: it has trained longer at the same
      # measured robustness.
      if self.best_dir and value >= self._best:
        self._best = value
        self._save_best(epoch + 1, value)
    logs["val_pgd_accuracy"] = value

  def evaluator(self) -> evaluation.Evaluator:
    """The natural and PGD evaluation of the model's classifier at this
    callback's settings: compiled on first use, then reused every epoch
    (and by `experiment.train` for the run's final test accuracy, which
    therefore needs no graph of its own). Needs the model (`fit` sets it).
    """
    if self._evaluator is None:
      self._evaluator = evaluation.Evaluator(
          self.model.classifier, self.epsilon, ("pgd",), self.config,
          self.seed, strategy=self.model.distribute_strategy,
          jit_compile=self.jit_compile)
    return self._evaluator

  def _evaluate(self) -> float:
    report = self.evaluator()(self.dataset)  # with replica 0's statistics
    return float(report["robust_accuracy"]["pgd"])

  def _save_best(self, epoch, value):
    checkpointing.write_checkpoint(
        self.best_dir, BEST_STATE, f"best-epoch-{epoch:04d}.weights.h5",
        self.model.classifier, {"epoch": epoch, "val_pgd_accuracy": value})
