"""Plug-in regularisers, added to any method's per-example loss.

Each is a small class, registered here by name, built only when its weight is
not 0 (so a weight of 0 is exactly the method without it):

| name | flag | term (per example) |
|---|---|---|
| consistency | `--consistency_weight` | JS divergence of the two views' AEs' sharpened predictions (Tack et al., 2022) |
| feature_alignment | `--feature_alignment_weight` | squared L2 distance of clean and adversarial penultimate features (Liu & JaJa, 2019) |
| center_loss | `--center_loss_weight` | squared L2 distance of adversarial features to their class centre (Agarwal et al., 2019) |

A regulariser has
- `needs_features`, `needs_views`: what the step must provide;
- `__call__(out, y) -> [B]`: its term per example, read from the step's
  `Forward` (logits and features of the clean and adversarial batch); it
  never reaches into the model;
- `update(out, y, weights)`: any state update after the optimiser step
  (the class centres), or nothing.
The model adds `weight * term` to each example's loss, so sample weights and
the mean over a global batch split between replicas apply to it as to the
method's loss.
"""

from part_tf.training.regularisers.center_loss import CenterLoss
from part_tf.training.regularisers.consistency import Consistency
from part_tf.training.regularisers.consistency import jensen_shannon
from part_tf.training.regularisers.feature_alignment import FeatureAlignment

REGULARISERS = {
    "consistency": Consistency,
    "feature_alignment": FeatureAlignment,
    "center_loss": CenterLoss,
}
REGULARISER_NAMES = tuple(REGULARISERS)
