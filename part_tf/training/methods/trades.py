"""TRADES (Zhang et al., ICML 2019): CE(f(x), y) + beta KL(p(x) || p(x_adv)),
the AEs maximising the KL from a 0.001 N(0, 1) start, as in the reference
code.

The clean batch passes through the model once (`trades_clean_passes=1`), or
twice as in the reference code (`loss/trades.py`, `loss/part_trades.py` of
PART, and TRADES' own): there the KL's target `p(x)` comes from a second
training-mode pass of the clean batch, run after the adversarial one, with
its gradient. In training mode a pass of the same batch with the same
weights gives the same logits, so the loss and its gradient are those of one
pass (up to rounding); what changes is that batch norm's moving statistics
are updated three times a step (clean, adversarial, clean: about 2/3 clean)
instead of twice (1/2 clean), and the inference-mode model (evaluation, the
attacks, the CAMs) reads those statistics.
"""

import tensorflow as tf

from part_tf import attacks
from part_tf.training.methods import base

CLEAN_PASSES = (1, 2)


def trades_loss(out, y, params):
  """TRADES: CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))."""
  logits_nat = out.logits("clean")
  logits_adv = out.logits("adv")
  if params.trades_clean_passes == 2:
    logits_target = out.logits("clean_again")
  else:
    logits_target = logits_nat
  natural = attacks.cross_entropy(logits_nat, y)
  robust = attacks.kl_from_clean(
      logits_adv, tf.nn.softmax(tf.cast(logits_target, tf.float32)))
  return natural + params.beta * robust


METHOD = base.BaseMethod(attack_loss=attacks.kl_from_clean,
                         attack_init=attacks.gaussian_init(0.001),
                         attack_target=base.clean_probabilities,
                         train_loss=trades_loss)
