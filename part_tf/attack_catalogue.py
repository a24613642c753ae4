"""One catalogue of attacks, for training and for evaluation
(`part_tf.registry.ATTACKS`).

An `Attack` can craft training AEs under a per-element budget with a
method's own loss (`craft`: `pgd`, `mma`), evaluate a classifier under a
uniform budget (`evaluate`: every attack here), or both. The training flag
`--attack` offers the first kind, `evaluate.py --attacks` the second.

| name     | attack |
|----------|--------|
| fgsm     | one signed-gradient step of size eps (Goodfellow et al.) |
| pgd      | PGD-k with random start on cross-entropy (Madry et al.), restarts; in training, the method's own PGD |
| cw       | CW-inf: PGD-k on the margin max_{i!=y} z_i - z_y |
| mma      | worst of 3 targeted margin PGD-k runs against the top wrong classes |
| apgd_ce  | APGD on cross-entropy (Croce & Hein), 100 iterations |
| apgd_t   | APGD on targeted DLR against each of 9 target classes |
| square   | Square, black box (Andriushchenko et al.) |
| apgd_dlr | APGD on (untargeted) DLR |
| fab_t    | FAB-T, minimum-norm, against each of 9 target classes (Croce & Hein) |
| fab      | untargeted FAB |

The order is the registration order, and an evaluation attack's position
seeds its random draws: add new attacks at the end.

Importing this module imports neither TensorFlow nor the attacks
themselves (`part_tf.attacks`, loaded on first use).
"""

import dataclasses
from typing import Callable

from part_tf import lazy
from part_tf import registry

attacks = lazy.load("part_tf.attacks")


@dataclasses.dataclass(frozen=True)
class Attack:
  """An attack of the catalogue.

  Attributes:
    evaluate: `(suite_config, model_fn, x, y, eps, seed) -> x_adv` under a
      uniform budget `eps` (with `minimum_norm`: `(x_adv, norms)`); None if
      it does not evaluate.
    craft: `(model_fn, x, y, eps_map, method, out, step_size, num_steps,
      seed) -> x_adv`: training AEs under the per-element budget `eps_map`
      for the `part_tf.methods.Method` `method` (`out`: the step's
      `Forward`); None if it does not train.
    white_box: it uses the model's gradients.
    minimum_norm: it also reports the smallest adversarial perturbation it
      found per example (FAB).
  """
  evaluate: Callable | None = None
  craft: Callable | None = None
  white_box: bool = True
  minimum_norm: bool = False


def register(name: str, **attack) -> Attack:
  """Registers an `Attack(**attack)` as `name`."""
  entry = Attack(**attack)
  registry.ATTACKS.register(name, entry)
  return entry


def training_attacks() -> tuple:
  """The names of the attacks that can craft training AEs."""
  return tuple(n for n, a in registry.ATTACKS.items() if a.craft is not None)


def evaluation_attacks() -> tuple:
  """The names of the attacks that can evaluate a classifier."""
  return tuple(n for n, a in registry.ATTACKS.items()
               if a.evaluate is not None)


def _step(config, eps):
  return config.step_size if config.step_size is not None else eps / 4


# --- training: the method's PGD, or MMA's targeted margin runs -------------

def _craft_pgd(model_fn, x, y, eps_map, method, out, step_size, num_steps,
               seed):
  return attacks.pgd(
      model_fn, x, method.attack_target(out, model_fn, x, y), eps_map,
      step_size=step_size, num_steps=num_steps,
      loss_fn=method.attack_loss, init_fn=method.attack_init(), seed=seed)


def _craft_mma(model_fn, x, y, eps_map, method, out, step_size, num_steps,
               seed):
  del out
  return attacks.mma(model_fn, x, y, eps_map, step_size, num_steps, k=3,
                     init_fn=method.attack_init(), seed=seed)


# --- evaluation --------------------------------------------------------------

def _fgsm(config, model_fn, x, y, eps, seed):
  del config, seed
  return attacks.pgd(model_fn, x, y, eps, eps, 1, init_fn=attacks.no_init)


def _start(config):
  return attacks.uniform_init if config.random_start else attacks.no_init


def _pgd(config, model_fn, x, y, eps, seed):
  return attacks.pgd(model_fn, x, y, eps, _step(config, eps),
                     config.num_steps, init_fn=_start(config), seed=seed)


def _cw(config, model_fn, x, y, eps, seed):
  return attacks.pgd(model_fn, x, y, eps, _step(config, eps),
                     config.num_steps, loss_fn=attacks.margin_violation,
                     init_fn=_start(config), seed=seed)


def _mma(config, model_fn, x, y, eps, seed):
  return attacks.mma(model_fn, x, y, eps, _step(config, eps),
                     config.num_steps, k=3, init_fn=_start(config), seed=seed)


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
  return attacks.square(model_fn, x, y, eps,
                        num_queries=config.square_queries, seed=seed,
                        rescale_schedule=config.square_rescale_schedule)


def _fab_t(config, model_fn, x, y, eps, seed):
  return attacks.fab(model_fn, x, y, eps, num_steps=config.fab_steps,
                     targeted=True, num_targets=config.num_targets,
                     seed=seed, return_norms=True)


def _fab(config, model_fn, x, y, eps, seed):
  return attacks.fab(model_fn, x, y, eps, num_steps=config.fab_steps,
                     targeted=False, num_restarts=config.fab_restarts,
                     seed=seed, return_norms=True)


register("fgsm", evaluate=_fgsm)
register("pgd", evaluate=_pgd, craft=_craft_pgd)
register("cw", evaluate=_cw)
register("mma", evaluate=_mma, craft=_craft_mma)
register("apgd_ce", evaluate=_apgd_ce)
register("apgd_t", evaluate=_apgd_t)
register("square", evaluate=_square, white_box=False)
register("apgd_dlr", evaluate=_apgd_dlr)
register("fab_t", evaluate=_fab_t, minimum_norm=True)
register("fab", evaluate=_fab, minimum_norm=True)
