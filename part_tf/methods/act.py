"""ACT: Adversarial Concurrent Training (Arani, Sarfraz & Zonooz, BMVC 2020,
arXiv 2008.07015), and PART-ACT: the same with the CAM budget after burn-in.

A robust model G trains on adversarial examples and a natural model F on the
clean images, at the same time; each distils the other's temperature-softened
predictions (the teacher's output is held fixed, `stop_gradient`):

  L_G = (1 - alpha) CE(G(x_adv), y) + alpha T^2 KL(s_T(F(x)) || s_T(G(x_adv)))
  L_F = (1 - beta)  CE(F(x), y)     + beta  T^2 KL(s_T(G(x_adv)) || s_T(F(x)))

with s_T the softmax at temperature T. The AEs maximise G's loss against the
natural model's (training-mode, fixed) clean predictions, without the
temperature, from a 0.001 N(0, 1) start:

  x_adv = argmax (1 - alpha) CE(G(x'), y) + alpha KL(s_1(F(x)) || s_1(G(x')))

These follow the authors' code (NeurAI-Lab/ACT, `train_act.py`,
`utilities/losses.py`). One departure: that code's attack objective adds the
batch *mean* of the CE to the batch *sum* of the KL, which weighs the KL
batch-size times more than the formula; here both are per example, as the
formula has them. Defaults (the authors' CIFAR settings): alpha = beta = 0.9,
T = 4.
"""

import dataclasses

from part_tf import lazy
from part_tf.config import setting
from part_tf.methods import base

attacks = lazy.load("part_tf.attacks")
tf = lazy.load("tensorflow")


def _softened_kl(teacher_logits, student_logits, temperature):
  """T^2 KL(s_T(teacher) || s_T(student)) per example, the teacher fixed."""
  t = tf.constant(temperature, tf.float32)
  teacher = tf.nn.softmax(
      tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / t)
  return t * t * attacks.kl_from_clean(
      tf.cast(student_logits, tf.float32) / t, teacher)


@base.register("act")
@dataclasses.dataclass(frozen=True)
class ACT(base.Method):
  """ACT: a robust and a natural model distil each other.

  Attributes:
    alpha: ACT: weight of the robust model's distillation term (paper: 0.9).
    beta: ACT: weight of the natural model's distillation term (paper: 0.9).
    temperature: ACT: distillation temperature (paper: 4).
    natural_model: ACT: the natural model's architecture (default: model).
      Like the other act_ settings, ignored by the other methods.
  """
  trains_natural_model = True
  flag_prefix = "act_"
  alpha: float = setting(0.9, kind="float", low=0, high=1)
  beta: float = setting(0.9, kind="float", low=0, high=1)
  temperature: float = setting(4.0, kind="float", low=0, low_open=True)
  natural_model: str | None = setting(kind="enum", choices="MODELS")

  def attack_init(self):
    return attacks.gaussian_init(0.001)

  def attack_target(self, out, clean_fn, x, y):
    """(labels, the natural model's clean probabilities, alpha)."""
    del clean_fn, x
    teacher = tf.stop_gradient(tf.nn.softmax(
        tf.cast(out.natural_logits(), tf.float32)))
    return y, teacher, tf.constant(self.alpha, tf.float32)

  def attack_loss(self, logits, target):
    """(1 - alpha) CE(G(x'), y) + alpha KL(s_1(F(x)) || s_1(G(x')))."""
    y, teacher, alpha = target
    return ((1.0 - alpha) * attacks.cross_entropy(logits, y)
            + alpha * attacks.kl_from_clean(logits, teacher))

  def train_loss(self, out, y):
    """L_G per example."""
    logits_adv = out.logits("adv")
    return ((1.0 - self.alpha) * attacks.cross_entropy(logits_adv, y)
            + self.alpha * _softened_kl(out.natural_logits(), logits_adv,
                                        self.temperature))

  def natural_loss(self, out, y):
    """L_F per example: the natural model on clean images only."""
    logits_nat = out.natural_logits()
    return ((1.0 - self.beta) * attacks.cross_entropy(logits_nat, y)
            + self.beta * _softened_kl(out.logits("adv"), logits_nat,
                                       self.temperature))


@base.register("part_act")
class PartACT(ACT):
  """PART-ACT: ACT with the pixel-reweighted budget after burn-in."""
  reweighted = True
