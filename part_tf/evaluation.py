"""The one evaluation loop: natural accuracy and accuracy under attacks.

Every accuracy part_tf reports comes out of `Evaluator`: the PGD accuracy
measured while a run trains (`part_tf.training.robust_evaluation`), a run's
final and best metrics (`metrics.json`), `evaluate.py` (single attacks and
AutoAttack's presets), `part_tf.AutoAttack` and the corruption sweep. So
the PGD-20 accuracy of `metrics.json` and `evaluate.py --attacks=pgd
--num_steps=20` on the same images and batch size agree example for
example.

Batches are compiled once (any batch size) and reused across calls. Every
random draw of an attack is tied to its example: the attack's seed is
`(seed, batch index, attack, restart)` and an example takes the rows of a
draw for its whole batch at its own position (`part_tf.attacks.noise`), so
it draws the same whether it is attacked alone, in a sequence, or on
another replica.

Two ways to run several attacks:

* independent (the default): every attack runs on every example; an
  example is robust if it survives them all (`worst_case_accuracy`);
* sequential (AutoAttack's `run_standard_evaluation`): each attack runs
  only on the clean-correct examples that survived the attacks before it,
  so the cost falls as robustness falls; `robust_accuracy` is the accuracy
  after each attack, `worst_case_accuracy` the final one.

Example:
  evaluator = Evaluator(lambda x: model(x, training=False), epsilon=8 / 255,
                        attacks=("pgd",), config=SuiteConfig(num_steps=20))
  report = evaluator(dataset)   # {"natural_accuracy": ..., ...}
"""

import time

import numpy as np
import tensorflow as tf

from part_tf import registry
from part_tf.attacks import noise
from part_tf.evaluation_config import SuiteConfig


def available_attacks() -> tuple:
  """The attacks that can evaluate a classifier, in catalogue order."""
  from part_tf import attack_catalogue  # pylint: disable=g-import-not-at-top
  return attack_catalogue.evaluation_attacks()


def _check_names(names):
  unknown = [n for n in names if n not in available_attacks()]
  if unknown:
    raise ValueError(f"unknown or unavailable attacks {unknown}; choose from "
                     f"{available_attacks()}")


def seed_pair(seed, batch_index, name, restart=0):
  """The stateless seed of an attack on a batch: the same for an attack
  whether it runs alone or in a sequence (keyed by its catalogue
  position)."""
  return tf.constant([seed, batch_index * 1_000_003
                      + registry.ATTACKS.names().index(name) * 1_009
                      + restart], tf.int64)


class Evaluator:
  """Natural accuracy and accuracy under attacks, batch by batch.

  Args:
    model_fn: images in [0, 1] -> logits (inference mode).
    epsilon: the L-inf budget of the attacks.
    attacks: names of evaluation attacks (`part_tf.attack_catalogue`), in
      order; none: natural accuracy only.
    config: the attacks' settings.
    seed: base of the stateless seeds (batch, attack and restart folded in).
    sequential: run each attack only on the examples still robust
      (AutoAttack's way; see the module doc).
    strategy: a `tf.distribute` strategy whose replicas split every batch
      between them (make `model_fn`'s model under its scope); each example
      gets the draws it gets on one device. With several workers, all must
      evaluate together.
    jit_compile: compile the batches with XLA (GPU).
    keep_adversarial: also return the adversarial images found: each
      example's clean image, replaced by the first attack's image that
      fools the model (report key "adversarial").
  """

  def __init__(self, model_fn, epsilon: float, attacks=(),
               config: SuiteConfig = SuiteConfig(), seed: int = 0,
               sequential: bool = False, strategy=None,
               jit_compile: bool = False, keep_adversarial: bool = False):
    from part_tf import components  # pylint: disable=g-import-not-at-top,unused-import
    # A Keras model's batch-norm statistics may differ between replicas
    # (they have no aggregation): every call evaluates with the first
    # replica's, those that checkpoints and exports hold.
    self._replica_state = (
        (list(model_fn.non_trainable_variables), strategy)
        if strategy is not None and strategy.num_replicas_in_sync > 1
        and hasattr(model_fn, "non_trainable_variables") else None)
    model_fn = as_model_fn(model_fn)
    self.attacks = tuple(attacks)
    _check_names(self.attacks)
    if len(set(self.attacks)) != len(self.attacks):
      raise ValueError(f"an attack appears twice in {self.attacks}")
    if sequential and not self.attacks:
      raise ValueError("a sequential evaluation needs at least one attack")
    self.epsilon = float(epsilon)
    self.config = config
    self.seed = int(seed)
    self.sequential = sequential
    compile_fn = lambda fn: _compiled(fn, strategy, jit_compile)
    self._natural = compile_fn(_clean(model_fn))
    self.keep_adversarial = keep_adversarial
    self._attacks = {name: compile_fn(_attacked(name, config, model_fn,
                                                epsilon, keep_adversarial))
                     for name in self.attacks}
    self._restarts = {name: config.restarts if name == "pgd" else 1
                      for name in self.attacks}

  def __call__(self, dataset, per_example: bool = False, progress=None,
               sequential: bool | None = None) -> dict:
    """The report of `dataset` (batches of images in [0, 1] and labels).

    `sequential` (None: the evaluator's setting) evaluates the other way
    with the same compiled attacks: e.g. AutoAttack's sequence and then each
    attack on every example, for one tracing of each attack.

    Returns:
      {"epsilon", "num_examples", "natural_accuracy", "robust_accuracy":
      {attack: accuracy (after it and those before it, if sequential)},
      "worst_case_accuracy"}; sequential: also "sequential": True,
      "examples_attacked", "seconds" (including each attack's one-off
      tracing) and "sequence" (the same as a list, in order); with a
      minimum-norm attack (FAB) "minimum_norm": {attack: {"median_norm",
      "num_examples", "found"}}; with `per_example`, the boolean arrays
      "natural" and "robust" (per attack) with one entry per example.
    """
    if self._replica_state is not None:
      from part_tf import distribution  # pylint: disable=g-import-not-at-top
      distribution.broadcast_first_replica(*self._replica_state)
    sequential = self.sequential if sequential is None else sequential
    if sequential and not self.attacks:
      raise ValueError("a sequential evaluation needs at least one attack")
    tally = _Tally(self.attacks)
    batches = enumerate(dataset)
    for i, (x, y) in (progress(batches) if progress else batches):
      self._batch(tally, i, tf.cast(x, tf.float32), tf.cast(y, tf.int32),
                  sequential)
    report = tally.report(self.epsilon, sequential, per_example)
    if self.keep_adversarial:
      report["adversarial"] = np.concatenate(tally.adversarial)
    return report

  def _batch(self, tally, i, x, y, sequential):
    clean, _ = _call(self._natural, x, y,
                     tf.constant([self.seed, 0], tf.int64), None)
    tally.correct.append(clean)
    if self.keep_adversarial:
      tally.adversarial.append(x.numpy().copy())
    still = clean.copy()
    for name in self.attacks:
      survived = still.copy() if sequential else clean.copy()
      for r in range(self._restarts[name]):
        rows = np.flatnonzero(survived) if sequential else None
        if not survived.any():
          break
        start = time.perf_counter()
        ok, norm, x_adv = _call(self._attacks[name], x, y,
                                seed_pair(self.seed, i, name, r), rows,
                                with_images=self.keep_adversarial)
        tally.seconds[name] += time.perf_counter() - start
        if self.keep_adversarial:
          tally.keep(x_adv, ok, rows, survived)
        if rows is None:
          survived &= ok
          norm = norm[clean]
        else:
          tally.attacked[name] += int(rows.size) if r == 0 else 0
          survived[rows] = ok
        if name in tally.norms:
          tally.norms[name].append(norm)
      tally.robust[name].append(survived)
      if sequential:
        still &= survived


class _Tally:
  """What the batches found, then the report."""

  def __init__(self, names):
    self.names = names
    self.correct = []
    self.adversarial = []
    self.robust = {name: [] for name in names}
    self.attacked = dict.fromkeys(names, 0)
    self.seconds = dict.fromkeys(names, 0.0)
    self.norms = {name: [] for name in names
                  if registry.ATTACKS.get(name).minimum_norm}

  def keep(self, x_adv, ok, rows, survived):
    """Puts the images that fool the model (and still stand clean-correct
    in this batch's copy) into the batch's adversarial images."""
    batch = self.adversarial[-1]
    rows = np.arange(len(survived)) if rows is None else rows
    fooled = rows[~ok & survived[rows]]
    where = {row: k for k, row in enumerate(rows)}
    for row in fooled:  # (few: the examples an attack just fooled)
      batch[row] = x_adv[where[row]]

  def report(self, epsilon, sequential, per_example) -> dict:
    if not self.correct:
      raise ValueError("the evaluation dataset is empty")
    correct = np.concatenate(self.correct)
    per_attack = {n: np.concatenate(self.robust[n]) for n in self.names}
    after, cumulative = {}, correct
    for name in self.names:
      cumulative = cumulative & per_attack[name]
      after[name] = float((cumulative if sequential
                           else correct & per_attack[name]).mean())
    report = {"epsilon": float(epsilon), "num_examples": int(correct.size),
              "natural_accuracy": float(correct.mean()),
              "robust_accuracy": after,
              "worst_case_accuracy": float(cumulative.mean())}
    if sequential:
      report.update(
          sequential=True, examples_attacked=self.attacked,
          seconds={n: round(v, 3) for n, v in self.seconds.items()},
          # The same, as a list in the order of the attacks (JSON files
          # may sort the keys of the dicts above).
          sequence=[{"attack": n, "robust_accuracy": after[n],
                     "examples_attacked": self.attacked[n],
                     "seconds": round(self.seconds[n], 3)}
                    for n in self.names])
    if self.norms:
      report["minimum_norm"] = {
          n: _norm_summary(np.concatenate(v) if v else [])
          for n, v in self.norms.items()}
    if per_example:
      report["natural"], report["robust"] = correct, per_attack
    return report


def robust_accuracy(model_fn, dataset, epsilon: float, step_size: float,
                    num_steps: int = 20, seed: int = 0, strategy=None,
                    jit_compile: bool = False, per_example: bool = False,
                    random_start: bool = True) -> dict:
  """Natural and PGD-`num_steps` accuracy (random start, one restart):
  {"natural_accuracy", "pgd_accuracy", "num_examples"} (and "natural",
  "robust" per example with `per_example`). The evaluation of a run's
  metrics, the same as `evaluate.py --attacks=pgd`."""
  return pgd_accuracies(Evaluator(
      model_fn, epsilon, ("pgd",),
      SuiteConfig(num_steps=num_steps, step_size=step_size,
                  random_start=random_start),
      seed, strategy=strategy, jit_compile=jit_compile)(
          dataset, per_example=per_example))


def pgd_accuracies(report: dict) -> dict:
  """`robust_accuracy`'s result from the report of an `Evaluator` whose
  attack is "pgd" (its per-example arrays too, if the report has them)."""
  result = {"natural_accuracy": report["natural_accuracy"],
            "pgd_accuracy": report["robust_accuracy"]["pgd"],
            "num_examples": report["num_examples"]}
  if "natural" in report:
    result.update(natural=report["natural"], robust=report["robust"]["pgd"])
  return result


def as_model_fn(model):
  """`model` as images -> logits in inference mode: a Keras model is called
  with `training=False`; a function is used as it is."""
  if hasattr(model, "trainable_variables") and hasattr(model, "layers"):
    return lambda x: model(x, training=False)
  return model


# --- compiled batches ----------------------------------------------------------

def _attacked(name, config, model_fn, epsilon, with_images=False):
  """The attack as `(x, y, seed_pair) -> [B, 2]`: (survives 0/1, the norm of
  the smallest adversarial perturbation found, NaN unless minimum-norm);
  with `with_images`, [B, 2 + H*W*C]: the adversarial images follow,
  flattened (one tensor, so that replicas gather it as one)."""
  attack = registry.ATTACKS.get(name)

  def run(x, y, seed_pair):
    out = attack.evaluate(config, model_fn, x, y, epsilon, seed_pair)
    x_adv, norm = out if attack.minimum_norm else (
        out, tf.fill(tf.shape(y), float("nan")))
    ok = tf.argmax(model_fn(x_adv), axis=-1, output_type=tf.int32) == y
    result = tf.stack([tf.cast(ok, tf.float32), tf.cast(norm, tf.float32)], 1)
    if with_images:
      flat = tf.reshape(tf.cast(x_adv, tf.float32), [tf.shape(y)[0], -1])
      result = tf.concat([result, flat], axis=1)
    return result
  run.with_images = with_images
  return run


def _clean(model_fn):
  def run(x, y, seed_pair):
    del seed_pair
    ok = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32) == y
    return tf.stack([tf.cast(ok, tf.float32),
                     tf.fill(tf.shape(ok), float("nan"))], 1)
  return run


def _call(fn, x, y, seed_pair, rows, with_images=None):
  """Runs `fn` on the rows `rows` (numpy int; None: all) of the batch
  `(x, y)`: (survives bool [n], norms [n]), and with `with_images` not None
  the adversarial images [n, H, W, C] (None if it is False)."""
  total = tf.constant(int(y.shape[0]), tf.int32)
  if rows is None:
    out = fn(x, y, seed_pair, tf.range(total), total)
  else:
    rows_t = tf.constant(rows, tf.int32)
    out = fn(tf.gather(x, rows_t), tf.gather(y, rows_t), seed_pair, rows_t,
             total)
  out = out.numpy()
  if with_images is None:
    return out[:, 0] > 0.5, out[:, 1]
  images = (out[:, 2:].reshape(len(out), *x.shape[1:]) if with_images
            else None)
  return out[:, 0] > 0.5, out[:, 1], images


def _norm_summary(norms):
  """Median (and the share found) of the smallest adversarial L-inf norms
  found for the examples a minimum-norm attack ran on (inf where none was
  found; for an example fooled inside the budget, the first successful
  run's: an upper bound)."""
  norms = np.asarray(norms, np.float64)
  if not norms.size:
    return {"median_norm": None, "num_examples": 0, "found": None}
  median = float(np.median(norms))
  # None when over half have none (JSON has no infinity).
  return {"median_norm": median if np.isfinite(median) else None,
          "num_examples": int(norms.size),
          "found": float(np.isfinite(norms).mean())}


def _compiled(fn, strategy, jit_compile=False):
  """`fn(x, y, seed_pair) -> float32 [B, 2]` compiled, and with several
  replicas run on each replica's share. Called as `(x, y, seed_pair, rows,
  total)`: the examples are the rows `rows` of a batch of `total`, and draw
  what they draw in a run on that whole batch (`noise.rows_at`)."""
  if strategy is None or strategy.num_replicas_in_sync == 1:
    def one_device(x, y, seed_pair, rows, total):
      with noise.rows_at(rows, total):
        return fn(x, y, seed_pair)
    return _any_batch_size(one_device, jit_compile)
  return _split_between_replicas(fn, strategy, jit_compile)


class _OwnRetracingFilter:
  """Drops TF's "triggered tf.function retracing" warning about this
  module's functions: each traces exactly once (one input signature), but
  every attack and every evaluator makes its own, and TF counts the traces
  by the Python code they share."""

  def filter(self, record):
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message and (
        "_compiled.<locals>.one_device" in message
        or "_split_between_replicas.<locals>.step" in message))


tf.get_logger().addFilter(_OwnRetracingFilter())


def _any_batch_size(fn, jit_compile=False):
  """`fn(x, y, seed_pair, rows, total)` compiled once for every batch size
  (traced on first use with an unknown batch dimension): batches of the
  still-robust examples have every size, and a trace for a batch of 1 split
  between 2 replicas would have a static empty share (TF's graph optimiser
  then divides by zero estimating a convolution's cost)."""
  traced = {}

  def call(x, y, seed_pair, rows, total):
    key = (tuple(x.shape[1:]), x.dtype)
    if key not in traced:
      traced[key] = tf.function(fn, jit_compile=jit_compile, input_signature=[
          tf.TensorSpec([None, *x.shape[1:]], x.dtype),
          tf.TensorSpec([None], y.dtype), tf.TensorSpec([2], tf.int64),
          tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)])
    return traced[key](x, y, seed_pair, rows, total)
  return call


def _split_between_replicas(fn, strategy, jit_compile=False):
  """`fn(x, y, seed_pair) -> float32 [B, 2]` run with each replica on its
  share of the batch, the results gathered back in batch order."""
  replicas = strategy.num_replicas_in_sync

  def on_replica(x, y, seed_pair, rows, total):
    # Every replica gets the whole batch and attacks its contiguous share.
    size = tf.shape(y)[0]
    r = tf.distribute.get_replica_context().replica_id_in_sync_group
    start, end = size * r // replicas, size * (r + 1) // replicas
    x, y = x[start:end], y[start:end]
    width = 2 + (int(np.prod(x.shape[1:]))
                 if getattr(fn, "with_images", False) else 0)
    with noise.rows_at(rows[start:end], total):
      # A share can be empty (a batch smaller than the replica count), and
      # TF's convolutions fail on an empty batch.
      return tf.cond(end > start, lambda: fn(x, y, seed_pair),
                     lambda: tf.zeros([0, width], tf.float32))

  def step(x, y, seed_pair, rows, total):
    out = strategy.run(on_replica, args=(x, y, seed_pair, rows, total))
    return strategy.gather(out, axis=0)

  return _any_batch_size(step, jit_compile)
