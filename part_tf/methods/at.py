"""AT (Madry et al., ICLR 2018): cross-entropy on AEs that maximise it, from
a uniform random start inside the budget; PART (Zhang et al., ICML 2024):
the same with the CAM budget after burn-in."""

import dataclasses

from part_tf import lazy
from part_tf.methods import base

attacks = lazy.load("part_tf.attacks")


@base.register("at")
@dataclasses.dataclass(frozen=True)
class AT(base.Method):
  """Adversarial training: CE on the AEs (AT's attack pieces are the
  base class')."""

  def train_loss(self, out, y):
    return attacks.cross_entropy(out.logits("adv"), y)


@base.register("part")
class PART(AT):
  """PART: AT with the pixel-reweighted budget after burn-in."""
  reweighted = True
