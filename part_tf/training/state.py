"""Variables that regularisers keep between steps, saved with the model."""

import keras


class Centres(keras.layers.Layer):
  """Class centres of the features ([classes, features], starting at 0):
  a layer only to hold (and save) the weight; it is not called.

  Args:
    num_classes: number of classes.
    feature_dim: size of the (flattened) features.
  """

  def __init__(self, num_classes: int, feature_dim: int, **kwargs):
    super().__init__(**kwargs)
    self.centres = self.add_weight(
        name="centres", shape=(int(num_classes), int(feature_dim)),
        initializer="zeros", trainable=False, dtype="float32",
        aggregation="only_first_replica")
    self.built = True
