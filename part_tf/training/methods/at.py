"""AT (Madry et al., ICLR 2018): CE on AEs that maximise CE, from a uniform
random start inside the budget."""

from part_tf import attacks
from part_tf.training.methods import base


def at_loss(out, y, params):
  """Madry et al.: CE on the AEs, per example."""
  del params
  return attacks.cross_entropy(out.logits("adv"), y)


METHOD = base.BaseMethod(attack_loss=attacks.cross_entropy,
                         attack_init=attacks.uniform_init,
                         attack_target=base.labels, train_loss=at_loss)
