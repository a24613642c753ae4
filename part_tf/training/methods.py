"""Training methods: a base method (its attack loss, start point and training
loss) and whether PART's pixel-reweighted budget replaces the uniform one.

`at` is Madry et al.'s adversarial training; `part` is AT with CAM budgets
after burn-in. TRADES and MART (and PART-T, PART-M) plug in here as further
`BaseMethod`s.
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from part_tf import attacks


@dataclasses.dataclass(frozen=True)
class BaseMethod:
  """How a base method crafts AEs and what it trains on.

  Attributes:
    attack_loss: `(logits, y) -> per-example loss` the AEs maximise.
    attack_init: PGD start-point function (see `part_tf.attacks`).
    train_loss: `(model_fn, x, x_adv, y) -> (scalar loss, logits on x_adv)`.
  """
  attack_loss: Callable
  attack_init: Callable
  train_loss: Callable


def _at_loss(model_fn, x, x_adv, y):
  del x
  logits = model_fn(x_adv)
  return tf.reduce_mean(attacks.cross_entropy(logits, y)), logits


BASE_METHODS = {
    "at": BaseMethod(attack_loss=attacks.cross_entropy,
                     attack_init=attacks.uniform_init,
                     train_loss=_at_loss),
}


@dataclasses.dataclass(frozen=True)
class Method:
  base: str
  reweighted: bool


METHODS = {
    "at": Method(base="at", reweighted=False),
    "part": Method(base="at", reweighted=True),
}
METHOD_NAMES = tuple(METHODS)
