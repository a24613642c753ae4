"""What every training method is made of: its hyper-parameters and the
pieces of a base method (how it crafts AEs and what it trains on)."""

import dataclasses
from typing import Callable

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class MethodParams:
  """The methods' hyper-parameters.

  Attributes:
    beta: weight of the robust (KL) term of TRADES and MART.
    act_alpha: ACT's weight of the distillation term of the robust model.
    act_beta: ACT's weight of the distillation term of the natural model.
    act_temperature: ACT's distillation temperature.
    trades_clean_passes: training-mode passes of the clean batch in the
      TRADES loss: 1, or 2 as in the reference code (see `trades.py`).
  """
  beta: float = 6.0
  act_alpha: float = 0.9
  act_beta: float = 0.9
  act_temperature: float = 4.0
  trades_clean_passes: int = 1


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


def labels(out, clean_fn, x, y, params):
  """The attack target of AT and MART: the labels."""
  del out, clean_fn, x, params
  return y


def clean_probabilities(out, clean_fn, x, y, params):
  """The attack target of TRADES: the inference-mode clean probabilities."""
  del out, y, params
  return tf.stop_gradient(tf.nn.softmax(tf.cast(clean_fn(x), tf.float32)))
