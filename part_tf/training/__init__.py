"""The PART training model and its callbacks (methods: `part_tf.methods`,
regularisers: `part_tf.regularisers`)."""

from part_tf.training.callbacks import BurnInSwitch
from part_tf.training.callbacks import SyncReplicaCopies
from part_tf.training.part_model import PARTModel

__all__ = ["BurnInSwitch", "PARTModel", "SyncReplicaCopies"]
