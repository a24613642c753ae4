"""`Forward`: the training-mode outputs of one step, each computed once, when
a loss first asks for it.

A method's loss asks for the logits of the clean and of the adversarial
batch, a regulariser also for the penultimate features, ACT for its natural
model's logits on the clean batch. Computing on demand keeps every forward
pass (and so every batch-norm statistics update) exactly what the losses
use: a regulariser of weight 0 does not exist and asks for nothing.
"""

import contextlib

import keras
import tensorflow as tf

CLEAN = "clean"
ADVERSARIAL = "adv"
# The clean batch run a second time (the reference's TRADES loss does).
CLEAN_AGAIN = "clean_again"


def penultimate_layer(classifier: keras.Model) -> str:
  """Name of the layer whose output the classifier's last layer reads (the
  penultimate features: `fc1` of the small CNN, `pool` of the ResNets)."""
  last = classifier.layers[-1]
  inputs = last.input
  if isinstance(inputs, (list, tuple)):
    raise ValueError(f"the last layer of {classifier.name!r} ({last.name!r}) "
                     "has several inputs: name the feature layer")
  return inputs._keras_history.operation.name  # pylint: disable=protected-access


def feature_network(classifier: keras.Model, layers) -> keras.Model:
  """The classifier with more outputs: the features of each of `layers`
  (None: the penultimate layer). It shares the classifier's layers and
  weights."""
  features = []
  for layer in layers:
    name = layer or penultimate_layer(classifier)
    try:
      features.append(classifier.get_layer(name).output)
    except ValueError:
      raise ValueError(f"the classifier {classifier.name!r} has no layer "
                       f"{name!r} to take the features at") from None
  return keras.Model(classifier.inputs, [classifier.outputs[0], *features],
                     name=f"{classifier.name}_with_features")


class Forward:
  """Lazily computed training-mode outputs of one training step.

  Args:
    network: the trained (robust) classifier, or its `feature_network` when
      a loss needs features.
    x: the clean batch.
    natural_network: ACT's natural model, or None.
    feature_layers: the layers `network`'s extra outputs are the features
      of, in order (None: the penultimate layer); empty: no features.
    training: the mode the networks run in (False: crafting AEs outside a
      training step, e.g. for pictures).
  """

  def __init__(self, network, x, natural_network=None, feature_layers=(),
               training=True):
    self._network = network
    self._training = training
    self._natural_network = natural_network
    self._feature_layers = tuple(feature_layers)
    self._inputs = {CLEAN: x, CLEAN_AGAIN: x}
    self._outputs = {}
    self._natural_logits = None
    self._frozen = False

  @contextlib.contextmanager
  def frozen(self):
    """Nothing new may be computed inside (where the gradient tape is
    paused: a cached output computed there would silently get no
    gradient); outputs computed before are readable."""
    self._frozen = True
    try:
      yield
    finally:
      self._frozen = False

  def _check_not_frozen(self, what):
    if self._frozen:
      raise RuntimeError(f"{what} was first asked for while crafting the "
                         "AEs, where no gradient is recorded: compute it "
                         "before the attack")

  def set_adversarial(self, x_adv):
    self._inputs[ADVERSARIAL] = x_adv

  def _run(self, which):
    if which not in self._outputs:
      self._check_not_frozen(f"the {which} outputs")
      outputs = self._network(self._inputs[which], training=self._training)
      self._outputs[which] = (tuple(outputs) if self._feature_layers
                              else (outputs,))
    return self._outputs[which]

  def logits(self, which: str) -> tf.Tensor:
    """Logits of the trained model on the `"clean"` or `"adv"` batch (or
    `"clean_again"`: the clean batch in a pass of its own)."""
    return self._run(which)[0]

  def features(self, which: str, layer: str | None = None) -> tf.Tensor:
    """Features (float32, flattened) of `layer` (None: the penultimate
    layer) on `"clean"` or `"adv"`."""
    if layer not in self._feature_layers:
      raise ValueError(f"this model was built without the features of "
                       f"{layer or 'the penultimate layer'}")
    features = tf.cast(
        self._run(which)[1 + self._feature_layers.index(layer)], tf.float32)
    return tf.reshape(features, [tf.shape(features)[0], -1])

  def natural_logits(self) -> tf.Tensor:
    """ACT's natural model on the clean batch (it never sees the AEs)."""
    if self._natural_network is None:
      raise ValueError("this method trains no natural model")
    if self._natural_logits is None:
      self._check_not_frozen("the natural model's logits")
      self._natural_logits = self._natural_network(
          self._inputs[CLEAN], training=self._training)
    return self._natural_logits

  @property
  def computed(self) -> tuple:
    """Which outputs were computed, in order (for tests)."""
    return tuple(self._outputs) + (
        ("natural",) if self._natural_logits is not None else ())
