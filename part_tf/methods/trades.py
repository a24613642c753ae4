"""TRADES (Zhang et al., ICML 2019): CE(f(x), y) + beta KL(p(x) || p(x_adv)),
the AEs maximising the KL from a 0.001 N(0, 1) start, as in the reference
code; PART-T: the same with the CAM budget after burn-in.

The clean batch passes through the model once (`clean_passes=1`), or twice
as in the reference code (`loss/trades.py`, `loss/part_trades.py` of PART,
and TRADES' own): there the KL's target `p(x)` comes from a second
training-mode pass of the clean batch, run after the adversarial one, with
its gradient. In training mode a pass of the same batch with the same
weights gives the same logits, so the loss and its gradient are those of one
pass (up to rounding); what changes is that batch norm's moving statistics
are updated three times a step (clean, adversarial, clean: about 2/3 clean)
instead of twice (1/2 clean), and the inference-mode model (evaluation, the
attacks, the CAMs) reads those statistics.
"""

import dataclasses

from part_tf import lazy
from part_tf.config import setting
from part_tf.methods import base

attacks = lazy.load("part_tf.attacks")
tf = lazy.load("tensorflow")


@base.register("trades")
@dataclasses.dataclass(frozen=True)
class TRADES(base.Method):
  """TRADES.

  Attributes:
    beta: weight of the KL term of TRADES and MART.
    clean_passes: trades / part_t: training-mode passes of the clean batch
      per step. 2 is the reference code's (its KL target is a second pass,
      after the adversarial one): the same loss and gradient, but batch
      norm's moving statistics see about 2/3 clean batches instead of 1/2.
      The paper datasets' default is 2.
  """
  flag_prefix = "trades_"
  beta: float = setting(6.0, kind="float", low=0, flag="beta")
  clean_passes: int = setting(1, kind="int", low=1, high=2)

  def attack_init(self):
    return attacks.gaussian_init(0.001)

  def attack_loss(self, logits, target):
    return attacks.kl_from_clean(logits, target)

  def attack_target(self, out, clean_fn, x, y):
    """The inference-mode clean probabilities."""
    del out, y
    return tf.stop_gradient(tf.nn.softmax(tf.cast(clean_fn(x), tf.float32)))

  def train_loss(self, out, y):
    """CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))."""
    logits_nat = out.logits("clean")
    logits_adv = out.logits("adv")
    logits_target = (out.logits("clean_again") if self.clean_passes == 2
                     else logits_nat)
    natural = attacks.cross_entropy(logits_nat, y)
    robust = attacks.kl_from_clean(
        logits_adv, tf.nn.softmax(tf.cast(logits_target, tf.float32)))
    return natural + self.beta * robust


@base.register("part_t")
class PartT(TRADES):
  """PART-T: TRADES with the pixel-reweighted budget after burn-in."""
  reweighted = True
