"""Plug-in regularisers, added to any method's per-example loss.

| name | setting | term (per example) |
|---|---|---|
| consistency | `consistency_weight` | JS divergence of the two views' AEs' sharpened predictions (Tack et al., 2022) |
| feature_alignment | `feature_alignment_weight` | squared L2 distance of clean and adversarial penultimate features (Liu & JaJa, 2019) |
| center_loss | `center_loss_weight` | squared L2 distance of adversarial features to their class centre (Agarwal et al., 2019) |

Each is one file of this package, a `Regulariser` registered by name
(`base.py` says how to add one). A weight of 0 builds nothing, so it is
exactly the method without it.
"""

# In the order the flags list them (registration order).
from part_tf.regularisers import consistency  # pylint: disable=g-bad-import-order
from part_tf.regularisers import feature_alignment  # pylint: disable=g-bad-import-order
from part_tf.regularisers import center_loss  # pylint: disable=g-bad-import-order
from part_tf.regularisers.base import register
from part_tf.regularisers.base import Regulariser
from part_tf.regularisers.center_loss import CenterLoss
from part_tf.regularisers.consistency import Consistency
from part_tf.regularisers.consistency import jensen_shannon
from part_tf.regularisers.feature_alignment import FeatureAlignment
from part_tf.registry import REGULARISERS


def get(name: str):
  """The regulariser class registered as `name`."""
  return REGULARISERS.get(name)


__all__ = ["CenterLoss", "Consistency", "FeatureAlignment", "REGULARISERS",
           "Regulariser", "get", "jensen_shannon", "register"]
