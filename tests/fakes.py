"""Stand-ins for the tests of the losses: a `Forward` whose outputs are
given arrays."""

import tensorflow as tf


class FixedOutputs:
  """A `part_tf.training.forward.Forward` with fixed logits and features."""

  def __init__(self, clean=None, adv=None, natural=None,
               clean_features=None, adv_features=None):
    self._logits = {"clean": clean, "adv": adv}
    self._features = {"clean": clean_features, "adv": adv_features}
    self._natural = natural

  def logits(self, which):
    return tf.constant(self._logits[which])

  def features(self, which, layer=None):
    del layer  # one feature layer
    return tf.constant(self._features[which])

  def natural_logits(self):
    return tf.constant(self._natural)
