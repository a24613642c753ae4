"""The settings of the evaluation attacks, and the named presets.

Importing this module imports neither TensorFlow nor Keras (the flags of
`evaluate.py` read the presets' names from it).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """Attack settings shared by the evaluation attacks.

  Attributes:
    num_steps: steps of PGD, CW and MMA runs.
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
    random_start: PGD, CW and MMA start at a random point inside the budget
      (Madry et al.); False: at the clean image.
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
  random_start: bool = True


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


