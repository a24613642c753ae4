"""Training methods: a base method (how it crafts AEs and what it trains on)
and whether PART's pixel-reweighted budget replaces the uniform one.

| method | base | budget after burn-in |
|---|---|---|
| at     | AT (Madry et al.): CE on AEs that maximise CE          | uniform |
| part   | AT                                                      | CAM     |
| trades | TRADES: CE(x) + beta KL(p(x) || p(x_adv)), AEs max KL   | uniform |
| part_t | TRADES                                                  | CAM     |
| mart   | MART: boosted CE(x_adv) + beta (1 - p_y(x)) KL, AEs max CE | uniform |
| part_m | MART                                                    | CAM     |

Formulas follow the TRADES and MART reference code.
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from part_tf import attacks


def _labels(clean_fn, x, y):
  del clean_fn, x
  return y


def _clean_probabilities(clean_fn, x, y):
  del y
  return tf.stop_gradient(tf.nn.softmax(tf.cast(clean_fn(x), tf.float32)))


@dataclasses.dataclass(frozen=True)
class BaseMethod:
  """How a base method crafts AEs and what it trains on.

  Attributes:
    attack_loss: `(logits, target) -> per-example loss` the AEs maximise.
    attack_init: PGD start-point function (see `part_tf.attacks`).
    attack_target: `(clean_fn, x, y) -> target` of `attack_loss` (the labels,
      or TRADES' clean probabilities); `clean_fn` is the inference-mode model.
    train_loss: `(model_fn, x, x_adv, y, beta) -> (per-example loss [B],
      logits on x_adv)`, with `model_fn` the training-mode model. The model
      reduces the per-example losses (with any sample weights) to the
      batch's mean, so the mean of these values is the method's loss.
  """
  attack_loss: Callable
  attack_init: Callable
  attack_target: Callable
  train_loss: Callable


def at_loss(model_fn, x, x_adv, y, beta):
  """Madry et al.: CE on the AEs, per example."""
  del x, beta
  logits_adv = model_fn(x_adv)
  return attacks.cross_entropy(logits_adv, y), logits_adv


def trades_loss(model_fn, x, x_adv, y, beta):
  """TRADES: CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))."""
  logits_nat = model_fn(x)
  logits_adv = model_fn(x_adv)
  natural = attacks.cross_entropy(logits_nat, y)
  robust = attacks.kl_from_clean(
      logits_adv, tf.nn.softmax(tf.cast(logits_nat, tf.float32)))
  return natural + beta * robust, logits_adv


def mart_loss(model_fn, x, x_adv, y, beta):
  """MART: boosted CE on the AEs + beta * (1 - p_y(x))-weighted KL, per
  example (the reference sums the KL term and divides by the batch size,
  which is its mean)."""
  logits_nat = tf.cast(model_fn(x), tf.float32)
  logits_adv = model_fn(x_adv)
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
  return boosted + beta * kl * weight, logits_adv


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
}


@dataclasses.dataclass(frozen=True)
class Method:
  base: str
  reweighted: bool


METHODS = {
    "at": Method(base="at", reweighted=False),
    "part": Method(base="at", reweighted=True),
    "trades": Method(base="trades", reweighted=False),
    "part_t": Method(base="trades", reweighted=True),
    "mart": Method(base="mart", reweighted=False),
    "part_m": Method(base="mart", reweighted=True),
}
METHOD_NAMES = tuple(METHODS)
ATTACKS = ("pgd", "mma")
