"""Adversarial attacks built from small parts (init, loss, step, projection)."""

from part_tf.attacks.pgd import cross_entropy
from part_tf.attacks.pgd import gaussian_init
from part_tf.attacks.pgd import no_init
from part_tf.attacks.pgd import pgd
from part_tf.attacks.pgd import project_linf
from part_tf.attacks.pgd import sign_step
from part_tf.attacks.pgd import uniform_init
