"""The attack suite's presets (AutoAttack's versions, the reference code's
"AutoAttack") and its gradient-masking sanity checks.

The attacks are the evaluation attacks of `part_tf.attack_catalogue`; the
loop that runs them is `part_tf.evaluation.Evaluator` (`evaluate` runs each
attack on every example, `evaluate_sequence` each on the examples still
robust, as AutoAttack's `run_standard_evaluation` does).
"""

import dataclasses

from part_tf import evaluation
from part_tf.evaluation import available_attacks  # pylint: disable=unused-import
from part_tf.evaluation_config import Preset  # pylint: disable=unused-import
from part_tf.evaluation_config import PRESETS
from part_tf.evaluation_config import SuiteConfig



def white_box_attacks() -> tuple:
  """The evaluation attacks that use the model's gradients."""
  from part_tf import registry  # pylint: disable=g-import-not-at-top
  return tuple(n for n in available_attacks()
               if registry.ATTACKS.get(n).white_box)


def evaluate(model_fn, dataset, epsilon: float, names=None,
             config: SuiteConfig = SuiteConfig(), seed: int = 0,
             progress=None, per_example: bool = False,
             strategy=None) -> dict:
  """Natural and per-attack robust accuracy (each attack on every example),
  and the per-example worst case: `evaluation.Evaluator`'s report.

  Args:
    model_fn: images in [0, 1] -> logits (inference mode).
    dataset: yields (images float32 in [0, 1], integer labels).
    epsilon: L-inf budget.
    names: attacks to run (default: every evaluation attack).
    config, seed, strategy: see `evaluation.Evaluator`.
    progress: optional callable wrapping the batch iterator (e.g. tqdm).
    per_example: also return `natural` and `robust` (per attack), boolean
      arrays with one entry per example.
  """
  names = tuple(names or available_attacks())
  return evaluation.Evaluator(model_fn, epsilon, names, config, seed,
                              strategy=strategy)(
                                  dataset, per_example=per_example,
                                  progress=progress)


def evaluate_sequence(model_fn, dataset, epsilon: float, names,
                      config: SuiteConfig = SuiteConfig(), seed: int = 0,
                      progress=None, per_example: bool = False,
                      strategy=None) -> dict:
  """AutoAttack's sequential evaluation: each attack in turn, only on the
  examples still robust to all the attacks before it (see
  `evaluation.Evaluator(sequential=True)` for the report). An example draws
  what it draws in a run of that attack alone on its whole batch, so the
  result is the per-example AND of the attacks' `evaluate` results (up to
  floating-point differences between batch sizes)."""
  return evaluation.Evaluator(model_fn, epsilon, tuple(names), config, seed,
                              sequential=True, strategy=strategy)(
                                  dataset, per_example=per_example,
                                  progress=progress)


def _step(config, eps):
  return config.step_size if config.step_size is not None else eps / 4


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
    if any(n in white_box_attacks() for n in order[:at]):
      checks.append(("black_box_weaker", square >= before - 0.002,
                     f"Square lowered the robust accuracy from {before:.4f} "
                     f"to {square:.4f} after the white-box attacks"))
    return checks
  white = [report["robust_accuracy"][n] for n in white_box_attacks()
           if n in report["robust_accuracy"]]
  if square is not None and white:
    checks.append(("black_box_weaker", square >= min(white) - 0.02,
                   f"Square accuracy {square:.3f} vs best white-box "
                   f"{min(white):.3f}"))
  return checks
