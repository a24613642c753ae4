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
"""

import dataclasses
import functools

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
    apgd_steps: iterations of APGD-CE and of each APGD-T target.
    square_queries: query budget of Square.
  """
  num_steps: int = 20
  step_size: float | None = None
  restarts: int = 1
  apgd_steps: int = 100
  square_queries: int = 1000


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
                      loss="ce", seed=seed)


def _apgd_t(config, model_fn, x, y, eps, seed):
  return attacks.apgd_targeted(model_fn, x, y, eps,
                               num_steps=config.apgd_steps,
                               num_targets=9, seed=seed)


def _square(config, model_fn, x, y, eps, seed):
  return attacks.square(model_fn, x, y, eps, num_queries=config.square_queries,
                        seed=seed)


ATTACKS = {"fgsm": _fgsm, "pgd": _pgd, "cw": _cw, "mma": _mma,
           "apgd_ce": _apgd_ce, "apgd_t": _apgd_t, "square": _square}
WHITE_BOX = ("fgsm", "pgd", "cw", "mma", "apgd_ce", "apgd_t")


def available_attacks() -> tuple:
  """The suite's attacks."""
  return tuple(ATTACKS)


def evaluate(model_fn, dataset, epsilon: float, names=None,
             config: SuiteConfig = SuiteConfig(), seed: int = 0,
             progress=None, per_example: bool = False,
             strategy=None) -> dict:
  """Natural and per-attack robust accuracy, and the per-example worst case.

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
     "robust_accuracy": {attack: accuracy}, "worst_case_accuracy"}.
  """
  names = tuple(names or available_attacks())
  unknown = [n for n in names if n not in available_attacks()]
  if unknown:
    raise ValueError(f"unknown or unavailable attacks {unknown}; choose from "
                     f"{available_attacks()}")

  def clean(x, y, seed_pair):
    del seed_pair
    return tf.argmax(model_fn(x), axis=-1, output_type=tf.int32) == y

  def make(name):
    def survives(x, y, seed_pair):
      x_adv = ATTACKS[name](config, model_fn, x, y, epsilon, seed_pair)
      return tf.argmax(model_fn(x_adv), axis=-1, output_type=tf.int32) == y
    if strategy is None or strategy.num_replicas_in_sync == 1:
      return tf.function(survives, reduce_retracing=True)
    return _split_between_replicas(survives, strategy)

  natural = (tf.function(clean, reduce_retracing=True)
             if strategy is None or strategy.num_replicas_in_sync == 1
             else _split_between_replicas(clean, strategy))

  survivors = {name: make(name) for name in names}
  restarts = {name: config.restarts if name == "pgd" else 1 for name in names}
  correct, robust = [], {name: [] for name in names}
  batches = enumerate(dataset)
  for i, (x, y) in (progress(batches) if progress else batches):
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.int32)
    clean = natural(x, y, tf.constant([seed, 0], tf.int64)).numpy()
    correct.append(clean)
    for a, name in enumerate(names):
      ok = clean.copy()
      for r in range(restarts[name]):
        seed_pair = tf.constant([seed, i * 1_000_003 + a * 1_009 + r],
                                tf.int64)
        ok &= survives_or_skip(survivors[name], x, y, seed_pair, ok)
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
  if per_example:
    report["natural"], report["robust"] = correct, per_attack
  return report


def _split_between_replicas(fn, strategy):
  """`fn(x, y, seed_pair) -> bool [B]` run with each replica on its share of
  the batch, the results gathered back in batch order."""
  replicas = strategy.num_replicas_in_sync

  def on_replica(x, y, seed_pair):
    # Every replica gets the whole batch and attacks its contiguous share.
    total = tf.shape(y)[0]
    r = tf.distribute.get_replica_context().replica_id_in_sync_group
    start, end = total * r // replicas, total * (r + 1) // replicas
    x, y = x[start:end], y[start:end]
    with noise.rows_of(start, end - start, total):
      # A share can be empty (a batch smaller than the replica count), and
      # TF's convolutions fail on an empty batch.
      ok = tf.cond(end > start, lambda: fn(x, y, seed_pair),
                   lambda: tf.zeros([0], tf.bool))
    return tf.cast(ok, tf.int32)

  @tf.function(reduce_retracing=True)
  def step(x, y, seed_pair):
    ok = strategy.run(on_replica, args=(x, y, seed_pair))
    return strategy.gather(ok, axis=0) > 0

  return step


def survives_or_skip(survives, x, y, seed_pair, still_robust):
  """Runs an attack only if some example of the batch is still robust."""
  if not still_robust.any():
    return still_robust
  return survives(x, y, seed_pair).numpy()


def sanity_checks(model_fn, dataset, report: dict, config: SuiteConfig,
                  seed: int = 0, strategy=None) -> list:
  """Gradient-masking checks (Carlini et al., "On evaluating adversarial
  robustness"): each is (name, passed, message).

  1. PGD at a very large budget (eps 0.5) drives accuracy to about 0.
  2. 5x more PGD steps never make the model look more robust (1 point slack).
  3. The black-box Square attack is not stronger than the white-box attacks.
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
  if base is not None:
    longer = evaluate(model_fn, dataset, eps, ["pgd"], dataclasses.replace(
        config, num_steps=5 * config.num_steps,
        step_size=_step(config, eps) / 2), seed,
        strategy=strategy)["robust_accuracy"]["pgd"]
    checks.append(("more_steps", longer <= base + 0.01,
                   f"PGD-{5 * config.num_steps} accuracy {longer:.3f} vs "
                   f"PGD-{config.num_steps} {base:.3f}"))
  square = report["robust_accuracy"].get("square")
  white = [report["robust_accuracy"][n] for n in WHITE_BOX
           if n in report["robust_accuracy"]]
  if square is not None and white:
    checks.append(("black_box_weaker", square >= min(white) - 0.02,
                   f"Square accuracy {square:.3f} vs best white-box "
                   f"{min(white):.3f}"))
  return checks
