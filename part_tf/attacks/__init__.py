"""Adversarial attacks built from small parts (init, loss, step, projection)."""

from part_tf.attacks.apgd import apgd
from part_tf.attacks.apgd import apgd_targeted
from part_tf.attacks.fab import fab
from part_tf.attacks.losses import cross_entropy
from part_tf.attacks.losses import kl_from_clean
from part_tf.attacks.losses import margin_violation
from part_tf.attacks.losses import targeted_margin
from part_tf.attacks.mma import mma
from part_tf.attacks.pgd import gaussian_init
from part_tf.attacks.pgd import no_init
from part_tf.attacks.pgd import pgd
from part_tf.attacks.pgd import project_linf
from part_tf.attacks.pgd import sign_step
from part_tf.attacks.pgd import uniform_init
from part_tf.attacks.square import square
