"""MART (Wang et al., ICLR 2020): boosted CE on the AEs + beta (1 - p_y(x))
KL(p(x) || p(x_adv)), the AEs maximising CE from a 0.001 N(0, 1) start, as in
the reference code; PART-M: the same with the CAM budget after burn-in."""

import dataclasses

from part_tf import lazy
from part_tf.config import setting
from part_tf.methods import base

attacks = lazy.load("part_tf.attacks")
tf = lazy.load("tensorflow")


@base.register("mart")
@dataclasses.dataclass(frozen=True)
class MART(base.Method):
  """MART.

  Attributes:
    beta: weight of the KL term of TRADES and MART.
  """
  flag_prefix = "mart_"
  beta: float = setting(6.0, kind="float", low=0, flag="beta")

  def attack_init(self):
    return attacks.gaussian_init(0.001)

  def train_loss(self, out, y):
    """Boosted CE on the AEs + beta * (1 - p_y(x))-weighted KL, per example
    (the reference sums the KL term and divides by the batch size, which is
    its mean)."""
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
    return boosted + self.beta * kl * weight


@base.register("part_m")
class PartM(MART):
  """PART-M: MART with the pixel-reweighted budget after burn-in."""
  reweighted = True
