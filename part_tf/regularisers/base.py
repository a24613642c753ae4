"""What a regulariser is, and how a new one is added.

A regulariser is a frozen dataclass (its fields are its settings, `weight`
first) whose `term(out, y)` gives one value per example; the model adds
`weight * term` to each example's loss, so sample weights and the mean over
a global batch split between replicas apply to it as to the method's loss.
`out` is the step's `part_tf.training.forward.Forward` (training-mode
logits, and features, of the clean and the adversarial batch); a regulariser
never reaches into the model.

  @part_tf.regularisers.register("logit_squeezing")
  @dataclasses.dataclass(frozen=True)
  class LogitSqueezing(part_tf.regularisers.Regulariser):
    '''Squared norm of the adversarial logits (Kannan et al., 2018).

    Attributes:
      weight: its weight.
    '''
    weight: float = 0.05

    def term(self, out, y):
      return tf.reduce_sum(tf.square(out.logits("adv")), axis=-1)

Its settings become flags named after it (`--logit_squeezing_weight`, 0 by
default: off), and `PARTModel(..., regularisers=[LogitSqueezing()])` adds
it. A regulariser that needs features sets `uses_features`; one that needs
two augmented views of each example sets `num_views = 2`; one with state
(class centres) makes it in `build` and changes it in `update`.
"""

import dataclasses
from typing import ClassVar

from part_tf import config as config_lib
from part_tf import registry
from part_tf.config import setting


def register(name: str):
  """Class decorator: registers a `Regulariser` subclass as `name` (its
  settings are then named `<name>_<field>`: `<name>_weight`, ...)."""
  def add(cls):
    if not (isinstance(cls, type) and issubclass(cls, Regulariser)):
      raise TypeError(f"register({name!r}) needs a subclass of "
                      f"part_tf.regularisers.Regulariser, got {cls!r}")
    if cls.flag_prefix is None:
      cls.flag_prefix = f"{name}_"
    registry.REGULARISERS.register(name, cls)
    cls._registered_as = name  # pylint: disable=protected-access
    return cls
  return add


@dataclasses.dataclass(frozen=True)
class Regulariser:
  """A term added to the method's per-example loss (see the module doc).

  Class attributes (not settings):
    num_views: augmented views of each example the batch must hold (2:
      the batch is [B, 2, H, W, C] and the model trains on all 2B).
    uses_features: whether `out.features` is asked for.
    flag_prefix: the start of its settings' names (default: its registered
      name and "_").

  Attributes:
    weight: the term's weight in the loss (its flag's default is 0: off).
  """
  num_views: ClassVar[int] = 1
  uses_features: ClassVar[bool] = False
  flag_prefix: ClassVar[str | None] = None
  _registered_as: ClassVar[str | None] = None

  weight: float = setting(1.0, kind="float", low=0)

  def term(self, out, y):
    """The term per example, [B] (the one method to write; one with state
    takes it as a third argument, `term(out, y, state)`)."""
    raise NotImplementedError(f"{type(self).__name__} must define "
                              "term(out, y)")

  def feature_layer(self) -> str | None:
    """The layer whose output `out.features` gives (None: the
    penultimate layer)."""
    return None

  def build(self, num_classes: int, feature_dim: int):
    """Its state (a Keras layer holding variables, saved with the model),
    or None."""
    del num_classes, feature_dim
    return None

  def update(self, out, y, weights, state) -> None:
    """Changes its state after the optimiser step; `weights` [B] weigh each
    example's part (0 for a stand-in)."""
    del out, y, weights, state

  def view_augmentation(self) -> str:
    """How its views are augmented (`num_views` > 1)."""
    return "crop_flip"

  @classmethod
  def check_off(cls, values: dict) -> None:
    """ValueError if the flat settings `values`, in which its weight is 0
    (off), set one of its settings that only means something when it is on
    (default: none is refused; the ranges are checked anyway)."""
    del values

  def check_run(self, config, spec=None) -> None:
    """ValueError if it cannot regularise the run `config` (a
    `part_tf.config.TrainConfig`) on the dataset `spec` (None: not known
    yet), e.g. views on data without augmentation."""
    del config, spec

  # --- settings ----------------------------------------------------------------

  @classmethod
  def registered_name_of(cls) -> str:
    name = cls.__dict__.get("_registered_as")
    if name is None:
      raise ValueError(f"regulariser {cls.__name__} is not registered: "
                       "decorate it with "
                       "@part_tf.regularisers.register(NAME)")
    return name

  def registered_name(self) -> str:
    return type(self).registered_name_of()

  def settings(self) -> dict:
    """{setting name: value} of its settings, weight included."""
    return {s.name: _jsonable(getattr(self, s.field.name))
            for s in config_lib.component_settings(
                type(self), self.registered_name())}

  def validate(self) -> None:
    for s in config_lib.component_settings(type(self),
                                           self.registered_name()):
      s.check(getattr(self, s.field.name))
    if self.weight is None:
      raise ValueError(f"{self.registered_name()} has no default weight: "
                       "give one")

  def __post_init__(self):
    self.validate()


def _jsonable(value):
  return list(value) if isinstance(value, tuple) else value
