"""ACT: Adversarial Concurrent Training (Arani, Sarfraz & Zonooz, BMVC 2020,
arXiv 2008.07015).

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

import tensorflow as tf

from part_tf import attacks
from part_tf.training.methods import base


def _softened_kl(teacher_logits, student_logits, temperature):
  """T^2 KL(s_T(teacher) || s_T(student)) per example, the teacher fixed."""
  t = tf.constant(temperature, tf.float32)
  teacher = tf.nn.softmax(
      tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / t)
  return t * t * attacks.kl_from_clean(
      tf.cast(student_logits, tf.float32) / t, teacher)


def attack_target(out, clean_fn, x, y, params):
  """(labels, the natural model's clean probabilities, alpha)."""
  del clean_fn, x
  teacher = tf.stop_gradient(tf.nn.softmax(
      tf.cast(out.natural_logits(), tf.float32)))
  return y, teacher, tf.constant(params.act_alpha, tf.float32)


def attack_loss(logits, target):
  """(1 - alpha) CE(G(x'), y) + alpha KL(s_1(F(x)) || s_1(G(x')))."""
  y, teacher, alpha = target
  return ((1.0 - alpha) * attacks.cross_entropy(logits, y)
          + alpha * attacks.kl_from_clean(logits, teacher))


def robust_loss(out, y, params):
  """L_G per example."""
  logits_adv = out.logits("adv")
  alpha = params.act_alpha
  return ((1.0 - alpha) * attacks.cross_entropy(logits_adv, y)
          + alpha * _softened_kl(out.natural_logits(), logits_adv,
                                 params.act_temperature))


def natural_loss(out, y, params):
  """L_F per example: the natural model on clean images only."""
  logits_nat = out.natural_logits()
  beta = params.act_beta
  return ((1.0 - beta) * attacks.cross_entropy(logits_nat, y)
          + beta * _softened_kl(out.logits("adv"), logits_nat,
                                params.act_temperature))


METHOD = base.BaseMethod(attack_loss=attack_loss,
                         attack_init=attacks.gaussian_init(0.001),
                         attack_target=attack_target, train_loss=robust_loss,
                         natural_loss=natural_loss)
