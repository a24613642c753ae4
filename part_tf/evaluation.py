"""Natural and PGD robust accuracy of a classifier, batched and compiled."""

import os

import keras
import numpy as np
import tensorflow as tf

from part_tf import attacks
from part_tf.attacks import noise
from part_tf import distribution
from part_tf.training import checkpointing


class PGDEvaluator:
  """Natural and PGD-`num_steps` accuracy under a uniform L-inf budget.

  The per-batch step is traced once per evaluator and reused, so evaluating
  every few epochs does not retrace. Under a strategy with several replicas
  each replica attacks its share of every batch; the random start of an
  example depends only on `(seed, batch index, position in the batch)`, so
  the result equals the one-device result up to floating-point order.

  Args:
    classifier: images in [0, 1] -> logits (created under `strategy`).
    epsilon: L-inf budget of the attack.
    step_size: PGD step size (commonly epsilon / 4).
    num_steps: PGD steps (20 for the standard PGD-20 evaluation).
    seed: stateless seed of the random starts (the batch index is folded in).
    random_start: start inside the budget at random (Madry et al.).
    jit_compile: compile the step with XLA (use on GPU).
    strategy: `tf.distribute` strategy to evaluate under (None: the current
      one). With several workers, every worker must evaluate together.
  """

  def __init__(self, classifier, epsilon: float, step_size: float,
               num_steps: int = 20, seed: int = 0, random_start: bool = True,
               jit_compile: bool = False, strategy=None):
    self._strategy = strategy or tf.distribute.get_strategy()
    self._classifier = classifier

    def correct(x, y, position, size, batch_index):
      model_fn = lambda z: classifier(z, training=False)
      y = tf.cast(y, tf.int64)
      batch_seed = tf.stack([tf.constant(seed, tf.int64), batch_index])
      # The random start of the whole batch, taken at this replica's
      # (contiguous) rows: the same start for an example whatever share of
      # the batch it is in.
      with noise.rows_of(position[0], tf.shape(y)[0], size[0]):
        x_adv = attacks.pgd(
            model_fn, x, y, epsilon, step_size, num_steps,
            init_fn=attacks.uniform_init if random_start else attacks.no_init,
            seed=batch_seed)
      natural = tf.argmax(model_fn(x), axis=-1) == y
      robust = tf.argmax(model_fn(x_adv), axis=-1) == y
      return tf.stack([tf.reduce_sum(tf.cast(natural, tf.int64)),
                       tf.reduce_sum(tf.cast(robust, tf.int64)),
                       tf.size(y, out_type=tf.int64)])

    self._traced = {}  # element spec -> the step traced for it
    if self._strategy.num_replicas_in_sync == 1:
      self._step = tf.function(correct, jit_compile=jit_compile)
    else:
      compiled = tf.function(correct, jit_compile=jit_compile,
                             reduce_retracing=True)

      def replica_fn(x, y, position, size, batch_index):
        # A partial last batch can leave a replica without examples, and
        # TF's convolutions fail on an empty batch.
        return tf.cond(tf.size(y) > 0,
                       lambda: compiled(x, y, position, size, batch_index),
                       lambda: tf.zeros([3], tf.int64))

      def distributed(x, y, position, size, batch_index):
        totals = self._strategy.run(
            replica_fn, args=(x, y, position, size, batch_index))
        return self._strategy.reduce(tf.distribute.ReduceOp.SUM, totals,
                                     axis=None)
      self._step = distributed

  def __call__(self, dataset) -> dict:
    """Returns {"natural_accuracy", "pgd_accuracy", "num_examples"}."""
    def with_positions(x, y):
      n = tf.shape(y)[0]
      return (tf.cast(x, tf.float32), y, tf.range(n), tf.fill([n], n))

    dataset = dataset.map(with_positions)
    if self._strategy.num_replicas_in_sync > 1:
      distribution.broadcast_first_replica(
          self._classifier.non_trainable_variables, self._strategy)
      options = tf.data.Options()
      options.experimental_distribute.auto_shard_policy = (
          tf.data.experimental.AutoShardPolicy.DATA)
      dataset = self._strategy.experimental_distribute_dataset(
          dataset.with_options(options))
    key = repr(dataset.element_spec)
    if key not in self._traced:
      # One trace for full and partial batches alike.
      self._traced[key] = tf.function(self._step, input_signature=[
          *dataset.element_spec, tf.TensorSpec([], tf.int64)])
    step = self._traced[key]
    totals = np.zeros(3, np.int64)
    for i, batch in enumerate(dataset):
      totals += step(*batch, tf.constant(i, tf.int64)).numpy()
    natural, robust, count = totals
    if count == 0:
      raise ValueError("robust accuracy asked of an empty dataset")
    return {"natural_accuracy": natural / count,
            "pgd_accuracy": robust / count, "num_examples": int(count)}


def robust_accuracy(classifier, dataset, epsilon: float, step_size: float,
                    num_steps: int = 20, seed: int = 0,
                    random_start: bool = True,
                    jit_compile: bool = False, strategy=None) -> dict:
  """One-off `PGDEvaluator(...)(dataset)`; see `PGDEvaluator` for the args."""
  return PGDEvaluator(classifier, epsilon, step_size, num_steps, seed,
                      random_start, jit_compile, strategy)(dataset)


BEST_STATE = "best.json"


def read_best(best_dir: str):
  """`{"epoch", "val_pgd_accuracy", "weights" (a path)}` of the best-robust
  checkpoint in `best_dir`, or None."""
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
  Robust overfitting is real: with `best_dir`, the weights of the epoch with
  the highest `val_pgd_accuracy` so far (the later epoch on a tie) are
  written to `best_dir/best-epoch-NNNN.weights.h5`, made current by
  `best.json` (both written atomically, and read back when a run resumes).

  Args:
    dataset: fixed evaluation batches (images in [0, 1], labels).
    every_n_epochs: evaluate after every N-th epoch and after the last one.
    epsilon, step_size, num_steps, seed, jit_compile: the attack (see
      `PGDEvaluator`).
    best_dir: where to keep the best-robust checkpoint (None: don't).
  """

  def __init__(self, dataset, every_n_epochs, epsilon, step_size,
               num_steps=20, seed=0, jit_compile=False, best_dir=None):
    super().__init__()
    self.dataset = dataset
    self.every_n_epochs = every_n_epochs
    self.attack = dict(epsilon=epsilon, step_size=step_size,
                       num_steps=num_steps, seed=seed, jit_compile=jit_compile)
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
      if self._evaluator is None:
        self._evaluator = PGDEvaluator(
            self.model.classifier, strategy=self.model.distribute_strategy,
            **self.attack)
      value = float(self._evaluator(self.dataset)["pgd_accuracy"])
      # A tie goes to the later epoch: it has trained longer at the same
      # measured robustness.
      if self.best_dir and value >= self._best:
        self._best = value
        self._save_best(epoch + 1, value)
    logs["val_pgd_accuracy"] = value

  def _save_best(self, epoch, value):
    checkpointing.write_checkpoint(
        self.best_dir, BEST_STATE, f"best-epoch-{epoch:04d}.weights.h5",
        self.model.classifier,
        {"epoch": epoch, "val_pgd_accuracy": value})
