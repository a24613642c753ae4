"""Training methods: a base method (how it crafts AEs and what it trains on)
and whether PART's pixel-reweighted budget replaces the uniform one.

| method   | base | budget after burn-in |
|---|---|---|
| at       | AT (Madry et al.): CE on AEs that maximise CE          | uniform |
| part     | AT                                                      | CAM     |
| trades   | TRADES: CE(x) + beta KL(p(x) || p(x_adv)), AEs max KL   | uniform |
| part_t   | TRADES                                                  | CAM     |
| mart     | MART: boosted CE(x_adv) + beta (1 - p_y(x)) KL, AEs max CE | uniform |
| part_m   | MART                                                    | CAM     |
| act      | ACT: a robust and a natural model distil each other (`act.py`) | uniform |
| part_act | ACT                                                     | CAM     |

Formulas follow the TRADES, MART and ACT reference code. Every loss reads
the training-mode outputs it needs from a `Forward` (`forward.py`) and returns
per-example values.
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from part_tf import attacks
from part_tf.training import act


@dataclasses.dataclass(frozen=True)
class MethodParams:
  """The methods' hyper-parameters.

  Attributes:
    beta: weight of the robust (KL) term of TRADES and MART.
    act_alpha: ACT's weight of the distillation term of the robust model.
    act_beta: ACT's weight of the distillation term of the natural model.
    act_temperature: ACT's distillation temperature.
  """
  beta: float = 6.0
  act_alpha: float = 0.9
  act_beta: float = 0.9
  act_temperature: float = 4.0


def _labels(out, clean_fn, x, y, params):
  del out, clean_fn, x, params
  return y


def _clean_probabilities(out, clean_fn, x, y, params):
  del out, y, params
  return tf.stop_gradient(tf.nn.softmax(tf.cast(clean_fn(x), tf.float32)))


@dataclasses.dataclass(frozen=True)
class BaseMethod:
  """How a base method crafts AEs and what it trains on.

  Attributes:
    attack_loss: `(logits, target) -> per-example loss` the AEs maximise.
    attack_init: PGD start-point function (see `part_tf.attacks`).
    attack_target: `(out, clean_fn, x, y, params) -> target` of
      `attack_loss` (the labels, TRADES' clean probabilities, ...); `out` is
      the step's `Forward`, `clean_fn` the inference-mode model.
    train_loss: `(out, y, params) -> per-example loss [B]` of the trained
      model. The model reduces the per-example losses (with any sample
      weights) to the batch's mean, so their mean is the method's loss.
    natural_loss: `(out, y, params) -> per-example loss` of a second,
      natural model trained beside it (ACT), or None.
  """
  attack_loss: Callable
  attack_init: Callable
  attack_target: Callable
  train_loss: Callable
  natural_loss: Callable | None = None


def at_loss(out, y, params):
  """Madry et al.: CE on the AEs, per example."""
  del params
  return attacks.cross_entropy(out.logits("adv"), y)


def trades_loss(out, y, params):
  """TRADES: CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))."""
  logits_nat = out.logits("clean")
  logits_adv = out.logits("adv")
  natural = attacks.cross_entropy(logits_nat, y)
  robust = attacks.kl_from_clean(
      logits_adv, tf.nn.softmax(tf.cast(logits_nat, tf.float32)))
  return natural + params.beta * robust


def mart_loss(out, y, params):
  """MART: boosted CE on the AEs + beta * (1 - p_y(x))-weighted KL, per
  example (the reference sums the KL term and divides by the batch size,
  which is its mean)."""
  logits_nat = tf.cast(out.logits("clean"), tf.float32)
  logits_adv = out.logits("adv")
  y = tf.cast(y, tf.int32)
  adv_probs = tf.nn.softmax(tf.cast(logits_adv, tf.float32))
  # The most likely wrong class of each AE.
  top2 = tf.math.top_k(adv_probs, k=2).indices
  wrong = tf.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
  boosted = attacks.cross_entropy(logits_adv, y) - tf.math.log(
      1.0001 - tf.gather(adv_probs, wrong, batch_dims=1) + 1e-12)
  nat_probs = tf.nn.softmax(logits_nat)
  kl = tf.reduce_sum(tf.math.xlogy(nat_probs, nat_probs) -
                     nat_probs * tf.math.log(adv_probs + 1e-12), axis=-1)
  weight = 1.0000001 - tf.gather(nat_probs, y, batch_dims=1)
  return boosted + params.beta * kl * weight


BASE_METHODS = {
    "at": BaseMethod(attack_loss=attacks.cross_entropy,
                     attack_init=attacks.uniform_init,
                     attack_target=_labels, train_loss=at_loss),
    "trades": BaseMethod(attack_loss=attacks.kl_from_clean,
                         attack_init=attacks.gaussian_init(0.001),
                         attack_target=_clean_probabilities,
                         train_loss=trades_loss),
    "mart": BaseMethod(attack_loss=attacks.cross_entropy,
                       attack_init=attacks.gaussian_init(0.001),
                       attack_target=_labels, train_loss=mart_loss),
    "act": BaseMethod(attack_loss=act.attack_loss,
                      attack_init=attacks.gaussian_init(0.001),
                      attack_target=act.attack_target,
                      train_loss=act.robust_loss,
                      natural_loss=act.natural_loss),
}


@dataclasses.dataclass(frozen=True)
class Method:
  base: str
  reweighted: bool

  @property
  def concurrent(self) -> bool:
    """Whether a natural model trains beside the robust one (ACT)."""
    return BASE_METHODS[self.base].natural_loss is not None


METHODS = {
    "at": Method(base="at", reweighted=False),
    "part": Method(base="at", reweighted=True),
    "trades": Method(base="trades", reweighted=False),
    "part_t": Method(base="trades", reweighted=True),
    "mart": Method(base="mart", reweighted=False),
    "part_m": Method(base="mart", reweighted=True),
    "act": Method(base="act", reweighted=False),
    "part_act": Method(base="act", reweighted=True),
}
METHOD_NAMES = tuple(METHODS)
REWEIGHTED_METHODS = tuple(n for n, m in METHODS.items() if m.reweighted)
ATTACKS = ("pgd", "mma")
