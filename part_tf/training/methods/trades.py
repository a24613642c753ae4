"""TRADES (Zhang et al., ICML 2019): CE(f(x), y) + beta KL(p(x) || p(x_adv)),
the AEs maximising the KL from a 0.001 N(0, 1) start, as in the reference
code."""

import tensorflow as tf

from part_tf import attacks
from part_tf.training.methods import base


def trades_loss(out, y, params):
  """TRADES: CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))."""
  logits_nat = out.logits("clean")
  logits_adv = out.logits("adv")
  natural = attacks.cross_entropy(logits_nat, y)
  robust = attacks.kl_from_clean(
      logits_adv, tf.nn.softmax(tf.cast(logits_nat, tf.float32)))
  return natural + params.beta * robust


METHOD = base.BaseMethod(attack_loss=attacks.kl_from_clean,
                         attack_init=attacks.gaussian_init(0.001),
                         attack_target=base.clean_probabilities,
                         train_loss=trades_loss)
