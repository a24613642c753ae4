"""The PART training model, its methods and callbacks."""

from part_tf.training.callbacks import BurnInSwitch
from part_tf.training.callbacks import SyncReplicaCopies
from part_tf.training.methods import ATTACKS
from part_tf.training.methods import METHOD_NAMES
from part_tf.training.methods import METHODS
from part_tf.training.part_model import PARTModel
