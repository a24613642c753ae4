"""The built-in components, registered (`part_tf.registry`) by importing the
files that define them. A new built-in component is one import line here;
a component of your own is a module imported before the flags are parsed
(`--plugins=MODULE`).

Importing this module imports neither TensorFlow nor Keras (the component
files load them when they first compute; see `part_tf.lazy`).
"""

# pylint: disable=unused-import
from part_tf import attack_catalogue
from part_tf.cam import budgets
from part_tf.cam import methods as cam_methods
from part_tf.data import specs
from part_tf.methods import at
from part_tf.methods import trades
from part_tf.methods import mart
from part_tf.methods import act
from part_tf.models import classifiers
from part_tf.regularisers import consistency
from part_tf.regularisers import feature_alignment
from part_tf.regularisers import center_loss
