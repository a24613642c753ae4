"""The robustness evaluation suite: several attacks, per-example worst case,
and gradient-masking sanity checks.

Every attack is `fn(model_fn, x, y, eps, seed) -> x_adv` under a uniform L-inf
budget `eps`, batched and compiled once per shape. An example counts as robust
only if it survives every attack of the suite (and every restart).

| name     | attack |
|----------|--------|
| fgsm     | one signed-gradient step of size eps (Goodfellow et al.) |
| pgd      | PGD-k with random start on cross-entropy (Madry et al.), restarts |
| cw       | CW-inf: PGD-k on the margin max_{i!=y} z_i - z_y |
| mma      | worst of 3 targeted margin PGD-k runs against the top wrong classes |
| apgd_ce  | APGD on cross-entropy (Croce & Hein), 100 iterations |
| apgd_t   | APGD on targeted DLR against each of 9 target classes |
| square   | Square, black box (Andriushchenko et al.) |
| apgd_dlr | APGD on (untargeted) DLR |
| fab_t    | FAB-T, minimum-norm, against each of 9 target classes (Croce & Hein) |
| fab      | untargeted FAB |

`evaluate` runs each attack on every example; `evaluate_sequence` runs them
in turn, each on the examples still robust (AutoAttack's
`run_standard_evaluation`), and `PRESETS` holds AutoAttack's "standard" and
"plus" versions, and "aa_reference": the PART reference code's "AutoAttack"
(torchattacks 3.4.0's `AutoAttack(version='standard')`, 10 iterations), to
set beside the paper's AA column.
"""

import dataclasses
import functools
import time

import numpy as np
import tensorflow as tf

from part_tf import attacks
from part_tf.attacks import noise


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """Attack settings shared by the suite.

  Attributes:
    num_steps: steps of PGD, CW and MMA runs (and APGD iterations).
    step_size: PGD/CW/MMA step size; None: eps / 4.
    restarts: random restarts of PGD (an example must survive all).
    apgd_steps: iterations of APGD-CE / APGD-DLR and of each APGD-T target.
    square_queries: query budget of Square.
    apgd_restarts: restarts of APGD-CE and APGD-DLR.
    num_targets: target classes of APGD-T and FAB-T.
    fab_steps: iterations of each FAB run.
    fab_restarts: runs of untargeted FAB (FAB-T makes one run per target,
      as in AutoAttack).
    square_rescale_schedule: stretch Square's schedule of square sizes to
      `square_queries` (AutoAttack does not).
  """
  num_steps: int = 20
  step_size: float | None = None
  restarts: int = 1
  apgd_steps: int = 100
  square_queries: int = 1000
  apgd_restarts: int = 1
  num_targets: int = 9
  fab_steps: int = 100
  fab_restarts: int = 1
  square_rescale_schedule: bool = True


def _step(config, eps):
  return config.step_size if config.step_size is not None else eps / 4


def _fgsm(config, model_fn, x, y, eps, seed):
  del config, seed
  return attacks.pgd(model_fn, x, y, eps, eps, 1, init_fn=attacks.no_init)


def _pgd(config, model_fn, x, y, eps, seed):
  return attacks.pgd(model_fn, x, y, eps, _step(config, eps), config.num_steps,
                     seed=seed)


def _cw(config, model_fn, x, y, eps, seed):
  return attacks.pgd(model_fn, x, y, eps, _step(config, eps), config.num_steps,
                     loss_fn=attacks.margin_violation, seed=seed)


def _mma(config, model_fn, x, y, eps, seed):
  return attacks.mma(model_fn, x, y, eps, _step(config, eps),
                     config.num_steps, k=3, seed=seed)


def _apgd_ce(config, model_fn, x, y, eps, seed):
  return attacks.apgd(model_fn, x, y, eps, num_steps=config.apgd_steps,
                      loss="ce", seed=seed,
                      num_restarts=config.apgd_restarts)


def _apgd_dlr(config, model_fn, x, y, eps, seed):
  return attacks.apgd(model_fn, x, y, eps, num_steps=config.apgd_steps,
                      loss="dlr", seed=seed,
                      num_restarts=config.apgd_restarts)


def _apgd_t(config, model_fn, x, y, eps, seed):
  return attacks.apgd_targeted(model_fn, x, y, eps,
                               num_steps=config.apgd_steps,
                               num_targets=config.num_targets, seed=seed)


def _square(config, model_fn, x, y, eps, seed):
  return attacks.square(model_fn, x, y, eps, num_queries=config.square_queries,
                        seed=seed,
                        rescale_schedule=config.square_rescale_schedule)


def _fab_t(config, model_fn, x, y, eps, seed):
  return attacks.fab(model_fn, x, y, eps, num_steps=config.fab_steps,
                     targeted=True, num_targets=config.num_targets,
                     seed=seed, return_norms=True)


def _fab(config, model_fn, x, y, eps, seed):
  return attacks.fab(model_fn, x, y, eps, num_steps=config.fab_steps,
                     targeted=False, num_restarts=config.fab_restarts,
                     seed=seed, return_norms=True)


# Append only: an attack's position seeds its random draws.
ATTACKS = {"fgsm": _fgsm, "pgd": _pgd, "cw": _cw, "mma": _mma,
           "apgd_ce": _apgd_ce, "apgd_t": _apgd_t, "square": _square,
           "apgd_dlr": _apgd_dlr, "fab_t": _fab_t, "fab": _fab}
WHITE_BOX = ("fgsm", "pgd", "cw", "mma", "apgd_ce", "apgd_t", "apgd_dlr",
             "fab_t", "fab")
# Attacks that report the smallest adversarial perturbation they found.
MINIMUM_NORM = ("fab_t", "fab")


@dataclasses.dataclass(frozen=True)
class Preset:
  """A named sequence of attacks with its settings (`evaluate_sequence`).

  Attributes:
    attacks: the attacks, in order.
    config: their settings.
    description: what the preset is, for reports.
    final: the name of the accuracy after the last attack, for reports.
  """
  attacks: tuple
  config: SuiteConfig
  description: str
  final: str = "AutoAttack"


# AutoAttack's versions, L-inf (autoattack.py, set_version): every attack at
# its published defaults, seed 0.
PRESETS = {
    "aa_standard": Preset(
        ("apgd_ce", "apgd_t", "fab_t", "square"),
        SuiteConfig(apgd_steps=100, apgd_restarts=1, num_targets=9,
                    fab_steps=100, fab_restarts=1, square_queries=5000,
                    square_rescale_schedule=False),
        "AutoAttack standard: APGD-CE (100 iterations, 1 restart), APGD-T "
        "(9 targets x 100 iterations), FAB-T (9 targets x 100 iterations), "
        "Square (5,000 queries)"),
    "aa_plus": Preset(
        ("apgd_ce", "apgd_dlr", "fab", "square", "apgd_t", "fab_t"),
        SuiteConfig(apgd_steps=100, apgd_restarts=5, num_targets=9,
                    fab_steps=100, fab_restarts=5, square_queries=5000,
                    square_rescale_schedule=False),
        "AutoAttack plus: APGD-CE and APGD-DLR (5 restarts each), FAB "
        "(5 restarts), Square (5,000 queries), APGD-T (9 targets), FAB-T "
        "(9 targets)"),
    # The PART reference code's AA column: craft_ae.py calls torchattacks
    # 3.4.0's AutoAttack(model, norm='Linf', eps=epsilon, version='standard'),
    # whose attacks keep their classes' defaults (autoattack.py, apgd.py,
    # apgdt.py, fab.py, square.py): 10 iterations, 9 targets (n_classes=10;
    # capped here at num_classes - 1), Square's schedule rescaled to its
    # 5,000 queries. Each attack runs on the survivors (MultiAttack).
    "aa_reference": Preset(
        ("apgd_ce", "apgd_t", "fab_t", "square"),
        SuiteConfig(apgd_steps=10, apgd_restarts=1, num_targets=9,
                    fab_steps=10, fab_restarts=1, square_queries=5000,
                    square_rescale_schedule=True),
        "The PART reference code's AA evaluation, torchattacks 3.4.0 "
        "AutoAttack(version='standard'): APGD-CE (10 iterations, 1 restart), "
        "APGD-T (9 targets x 10 iterations), FAB-T (9 targets x 10 "
        "iterations), Square (5,000 queries, schedule rescaled). NOT "
        "AutoAttack standard, which runs 100 iterations: use it beside the "
        "paper's AA column only, and report aa_standard",
        final="reference AA (not AutoAttack)"),
}


def available_attacks() -> tuple:
  """The suite's attacks."""
  return tuple(ATTACKS)


def _check_names(names):
  unknown = [n for n in names if n not in available_attacks()]
  if unknown:
    raise ValueError(f"unknown or unavailable attacks {unknown}; choose from "
                     f"{available_attacks()}")


def _seed_pair(seed, batch_index, name, restart=0):
  """The stateless seed of an attack on a batch: the same for an attack
  whether it runs alone (`evaluate`) or in a sequence."""
  return tf.constant([seed, batch_index * 1_000_003
                      + list(ATTACKS).index(name) * 1_009 + restart],
                     tf.int64)


def _compiled(fn, strategy):
  """`fn(x, y, seed_pair) -> float32 [B, 2]` compiled, and with several
  replicas run on each replica's share. Called as `(x, y, seed_pair, rows,
  total)`: the examples are the rows `rows` of a batch of `total`, and draw
  what they draw in a run on that whole batch (`noise.rows_at`)."""
  if strategy is None or strategy.num_replicas_in_sync == 1:
    def one_device(x, y, seed_pair, rows, total):
      with noise.rows_at(rows, total):
        return fn(x, y, seed_pair)
    return _any_batch_size(one_device)
  return _split_between_replicas(fn, strategy)


class _OwnRetracingFilter:
  """Drops TF's "triggered tf.function retracing" warning about this
  module's functions: each traces exactly once (one input signature), but
  every attack and every `evaluate` call makes its own, and TF counts the
  traces by the Python code they share."""

  def filter(self, record):
    message = record.getMessage()
    return not ("triggered tf.function retracing" in message and (
        "_compiled.<locals>.one_device" in message
        or "_split_between_replicas.<locals>.step" in message))


tf.get_logger().addFilter(_OwnRetracingFilter())


def _any_batch_size(fn):
  """`fn(x, y, seed_pair, rows, total)` compiled once for every batch size
  (traced on first use with an unknown batch dimension): batches of the
  still-robust examples have every size, and a trace for a batch of 1 split
  between 2 replicas would have a static empty share (TF's graph optimiser
  then divides by zero estimating a convolution's cost)."""
  traced = {}

  def call(x, y, seed_pair, rows, total):
    key = (tuple(x.shape[1:]), x.dtype)
    if key not in traced:
      traced[key] = tf.function(fn, input_signature=[
          tf.TensorSpec([None, *x.shape[1:]], x.dtype),
          tf.TensorSpec([None], y.dtype), tf.TensorSpec([2], tf.int64),
          tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)])
    return traced[key](x, y, seed_pair, rows, total)
  return call


def _attacked(name, config, model_fn, epsilon):
  """The attack as `(x, y, seed_pair) -> [B, 2]`: (survives 0/1, the norm of
  the smallest adversarial perturbation found, NaN unless minimum-norm)."""
  def run(x, y, seed_pair):
    out = ATTACKS[name](config, model_fn, x, y, epsilon, seed_pair)
    x_adv, norm = out if name in MINIMUM_NORM else (
        out, tf.fill(tf.shape(y), float("nan")))
    ok = tf.argmax(model_fn(x_adv), axis=-1, output_type=tf.int32) == y
    return tf.stack([tf.cast(ok, tf.float32), tf.cast(norm, tf.float32)], 1)
  return run


def _clean(model_fn):
  def run(x, y, seed_pair):
    del seed_pair
    ok = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32) == y
    return tf.stack([tf.cast(ok, tf.float32),
                     tf.fill(tf.shape(ok), float("nan"))], 1)
  return run


def _call(fn, x, y, seed_pair, rows):
  """Runs `fn` on the rows `rows` (numpy int) of the batch `(x, y)`:
  (survives bool [n], norms [n])."""
  total = tf.constant(int(y.shape[0]), tf.int32)
  if rows is None:
    out = fn(x, y, seed_pair, tf.range(total), total)
  else:
    rows_t = tf.constant(rows, tf.int32)
    out = fn(tf.gather(x, rows_t), tf.gather(y, rows_t), seed_pair, rows_t,
             total)
  out = out.numpy()
  return out[:, 0] > 0.5, out[:, 1]


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


def evaluate(model_fn, dataset, epsilon: float, names=None,
             config: SuiteConfig = SuiteConfig(), seed: int = 0,
             progress=None, per_example: bool = False,
             strategy=None) -> dict:
  """Natural and per-attack robust accuracy, and the per-example worst case.

  Every attack runs on every example of a batch that has some example still
  robust to it (see `evaluate_sequence` for AutoAttack's sequential run).

  Args:
    model_fn: images in [0, 1] -> logits (inference mode).
    dataset: yields (images float32 in [0, 1], integer labels).
    epsilon: L-inf budget.
    names: attacks to run (default: every available one).
    config: attack settings.
    seed: base of the stateless seeds (batch, attack and restart folded in).
    progress: optional callable wrapping the batch iterator (e.g. tqdm).
    per_example: also return the boolean arrays `natural` and
      `robust` (per attack), one entry per example.
    strategy: a `tf.distribute` strategy whose replicas split every batch
      between them (contiguous shares; make `model_fn`'s model under its
      scope). Each example gets the random draws it gets on one device
      (`part_tf.attacks.noise`), so the results equal the one-device ones.
      With several workers, all must evaluate together.

  Returns:
    {"epsilon", "num_examples", "natural_accuracy",
     "robust_accuracy": {attack: accuracy}, "worst_case_accuracy"}, and for
    minimum-norm attacks (FAB) "minimum_norm": {attack: {"median_norm",
    "num_examples", "found"}} over the clean-correct examples (inf counts
    where nothing was found).
  """
  names = tuple(names or available_attacks())
  _check_names(names)
  natural = _compiled(_clean(model_fn), strategy)
  survivors = {name: _compiled(_attacked(name, config, model_fn, epsilon),
                               strategy) for name in names}
  restarts = {name: config.restarts if name == "pgd" else 1 for name in names}
  correct, robust = [], {name: [] for name in names}
  norms = {name: [] for name in names if name in MINIMUM_NORM}
  batches = enumerate(dataset)
  for i, (x, y) in (progress(batches) if progress else batches):
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.int32)
    clean, _ = _call(natural, x, y, tf.constant([seed, 0], tf.int64), None)
    correct.append(clean)
    for name in names:
      ok = clean.copy()
      for r in range(restarts[name]):
        if not ok.any():
          break
        survived, norm = _call(survivors[name], x, y,
                               _seed_pair(seed, i, name, r), None)
        ok &= survived
        if name in norms:
          norms[name].append(norm[clean])
      robust[name].append(ok)
  if not correct:
    raise ValueError("the evaluation dataset is empty")
  correct = np.concatenate(correct)
  per_attack = {name: np.concatenate(robust[name]) for name in names}
  worst = functools.reduce(np.logical_and, per_attack.values(), correct)
  report = {"epsilon": float(epsilon), "num_examples": int(correct.size),
            "natural_accuracy": float(correct.mean()),
            "robust_accuracy": {n: float(v.mean())
                                for n, v in per_attack.items()},
            "worst_case_accuracy": float(worst.mean())}
  if norms:
    report["minimum_norm"] = {
        n: _norm_summary(np.concatenate(v) if v else []) for n, v in
        norms.items()}
  if per_example:
    report["natural"], report["robust"] = correct, per_attack
  return report


def evaluate_sequence(model_fn, dataset, epsilon: float, names,
                      config: SuiteConfig = SuiteConfig(), seed: int = 0,
                      progress=None, per_example: bool = False,
                      strategy=None) -> dict:
  """AutoAttack's sequential evaluation: each attack in turn, only on the
  examples still robust to all the attacks before it.

  The cost falls as robustness falls: an attack runs on the clean-correct
  examples of a batch that survived every earlier attack (gathered into one
  smaller batch), and an example counts as robust only if it survives them
  all. An example draws the same random numbers as in a run of that attack
  alone on its whole batch (`evaluate`, same seed), so the result is the
  per-example AND of the attacks' `evaluate` results (up to floating-point
  differences between batch sizes, which can flip an example sitting on a
  decision boundary).

  Args:
    model_fn, dataset, epsilon, config, seed, progress, strategy: as for
      `evaluate` (`PRESETS[...].config` for AutoAttack's settings).
    names: the attacks, in order (`PRESETS[...].attacks`).
    per_example: also return `natural` and `robust` (per attack: survived
      it, False where an earlier attack had already succeeded), boolean
      arrays with one entry per example.

  Returns:
    {"epsilon", "num_examples", "natural_accuracy", "sequential": True,
     "robust_accuracy": {attack: robust accuracy after it and every attack
     before it}, "worst_case_accuracy" (the final, AutoAttack accuracy),
     "examples_attacked": {attack: n}, "seconds": {attack: s} (including
     each attack's one-off tracing), "sequence": the same as a list in
     order}, and for minimum-norm attacks (FAB) "minimum_norm" over the
     examples they ran on.
  """
  names = tuple(names)
  if not names:
    raise ValueError("evaluate_sequence needs at least one attack")
  if len(set(names)) != len(names):
    raise ValueError(f"an attack appears twice in the sequence {names}")
  _check_names(names)
  natural = _compiled(_clean(model_fn), strategy)
  survivors = {name: _compiled(_attacked(name, config, model_fn, epsilon),
                               strategy) for name in names}
  correct, robust = [], {name: [] for name in names}
  restarts = {name: config.restarts if name == "pgd" else 1 for name in names}
  attacked = dict.fromkeys(names, 0)
  seconds = dict.fromkeys(names, 0.0)
  norms = {name: [] for name in names if name in MINIMUM_NORM}
  batches = enumerate(dataset)
  for i, (x, y) in (progress(batches) if progress else batches):
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.int32)
    clean, _ = _call(natural, x, y, tf.constant([seed, 0], tf.int64), None)
    correct.append(clean)
    still = clean.copy()
    for name in names:
      survived = still.copy()
      for r in range(restarts[name]):
        rows = np.flatnonzero(survived)
        if not rows.size:
          break
        start = time.perf_counter()
        ok, norm = _call(survivors[name], x, y,
                         _seed_pair(seed, i, name, r), rows)
        seconds[name] += time.perf_counter() - start
        attacked[name] += int(rows.size) if r == 0 else 0
        survived[rows] = ok
        if name in norms:
          norms[name].append(norm)
      robust[name].append(survived)
      still &= survived
  if not correct:
    raise ValueError("the evaluation dataset is empty")
  correct = np.concatenate(correct)
  per_attack = {name: np.concatenate(robust[name]) for name in names}
  after, cumulative = {}, correct
  for name in names:
    cumulative = cumulative & per_attack[name]
    after[name] = float(cumulative.mean())
  report = {"epsilon": float(epsilon), "num_examples": int(correct.size),
            "natural_accuracy": float(correct.mean()), "sequential": True,
            "robust_accuracy": after,
            "worst_case_accuracy": float(cumulative.mean()),
            "examples_attacked": attacked,
            "seconds": {n: round(v, 3) for n, v in seconds.items()},
            # The same, as a list in the order of the attacks (JSON files
            # may sort the keys of the dicts above).
            "sequence": [{"attack": n, "robust_accuracy": after[n],
                          "examples_attacked": attacked[n],
                          "seconds": round(seconds[n], 3)} for n in names]}
  if norms:
    report["minimum_norm"] = {
        n: _norm_summary(np.concatenate(v) if v else []) for n, v in
        norms.items()}
  if per_example:
    report["natural"], report["robust"] = correct, per_attack
  return report


def _split_between_replicas(fn, strategy):
  """`fn(x, y, seed_pair) -> float32 [B, 2]` run with each replica on its
  share of the batch, the results gathered back in batch order."""
  replicas = strategy.num_replicas_in_sync

  def on_replica(x, y, seed_pair, rows, total):
    # Every replica gets the whole batch and attacks its contiguous share.
    size = tf.shape(y)[0]
    r = tf.distribute.get_replica_context().replica_id_in_sync_group
    start, end = size * r // replicas, size * (r + 1) // replicas
    x, y = x[start:end], y[start:end]
    with noise.rows_at(rows[start:end], total):
      # A share can be empty (a batch smaller than the replica count), and
      # TF's convolutions fail on an empty batch.
      return tf.cond(end > start, lambda: fn(x, y, seed_pair),
                     lambda: tf.zeros([0, 2], tf.float32))

  def step(x, y, seed_pair, rows, total):
    out = strategy.run(on_replica, args=(x, y, seed_pair, rows, total))
    return strategy.gather(out, axis=0)

  return _any_batch_size(step)


def sanity_checks(model_fn, dataset, report: dict, config: SuiteConfig,
                  seed: int = 0, strategy=None) -> list:
  """Gradient-masking checks (Carlini et al., "On evaluating adversarial
  robustness"): each is (name, passed, message).

  1. PGD at a very large budget (eps 0.5) drives accuracy to about 0.
  2. 5x more PGD steps never make the model look more robust (1 point slack).
  3. The black-box Square attack is not stronger than the white-box attacks
     (in a sequence, adapted from AutoAttack's check: Square lowers the
     robust accuracy left by the attacks before it by at most 0.2 points).
  """
  checks = []
  huge = evaluate(model_fn, dataset, 0.5, ["pgd"],
                  dataclasses.replace(config, restarts=1,
                                      step_size=0.5 / 4), seed,
                  strategy=strategy)
  huge_acc = huge["robust_accuracy"]["pgd"]
  checks.append(("large_eps", huge_acc <= 0.05,
                 f"PGD accuracy at eps 0.5 is {huge_acc:.3f} (expected ~0)"))
  eps = report["epsilon"]
  base = report["robust_accuracy"].get("pgd")
  if base is not None and not report.get("sequential"):
    longer = evaluate(model_fn, dataset, eps, ["pgd"], dataclasses.replace(
        config, num_steps=5 * config.num_steps,
        step_size=_step(config, eps) / 2), seed,
        strategy=strategy)["robust_accuracy"]["pgd"]
    checks.append(("more_steps", longer <= base + 0.01,
                   f"PGD-{5 * config.num_steps} accuracy {longer:.3f} vs "
                   f"PGD-{config.num_steps} {base:.3f}"))
  square = report["robust_accuracy"].get("square")
  if square is not None and report.get("sequential"):
    # Adapted from AutoAttack's check_square_sr: Square, a black-box attack,
    # may lower the robust accuracy left by the attacks before it by at most
    # 0.2 points (of all examples). AutoAttack compares with the minimum of
    # every other attack's, which in "plus" (attacks after Square) never
    # fires.
    order = list(report["robust_accuracy"])
    at = order.index("square")
    before = (report["robust_accuracy"][order[at - 1]] if at
              else report["natural_accuracy"])
    if any(n in WHITE_BOX for n in order[:at]):
      checks.append(("black_box_weaker", square >= before - 0.002,
                     f"Square lowered the robust accuracy from {before:.4f} "
                     f"to {square:.4f} after the white-box attacks"))
    return checks
  white = [report["robust_accuracy"][n] for n in WHITE_BOX
           if n in report["robust_accuracy"]]
  if square is not None and white:
    checks.append(("black_box_weaker", square >= min(white) - 0.02,
                   f"Square accuracy {square:.3f} vs best white-box "
                   f"{min(white):.3f}"))
  return checks
