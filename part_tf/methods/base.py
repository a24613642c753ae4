"""What a training method is, and how a new one is added.

A method is a frozen dataclass whose fields are its hyper-parameters, with
the pieces of its training step as methods:

* `attack_init`, `attack_loss`, `attack_target`: how its AEs are crafted
  (AT's by default: a uniform random start inside the budget, ascending the
  cross-entropy of the labels);
* `train_loss(out, y)`: the per-example loss the model trains on, the one
  method a new method must write;
* `natural_loss(out, y)`: a second, natural model's loss (ACT), or None.

`out` is the step's `part_tf.training.forward.Forward`: it hands out the
training-mode logits of the clean (`out.logits("clean")`) and the
adversarial batch (`out.logits("adv")`), each computed once, when first
asked for. A method registers itself under a name, and its PART variant
(the same method with the CAM budget after burn-in) is a subclass with
`reweighted = True`:

  @part_tf.methods.register("alp")
  @dataclasses.dataclass(frozen=True)
  class ALP(part_tf.methods.Method):
    '''Adversarial logit pairing: CE on the AEs plus the squared distance
    of clean and adversarial logits.

    Attributes:
      pairing: weight of the pairing term.
    '''
    pairing: float = 0.5

    def train_loss(self, out, y):
      adv = out.logits("adv")
      return (part_tf.attacks.cross_entropy(adv, y) + self.pairing *
              tf.reduce_sum(tf.square(adv - out.logits("clean")), -1))

  @part_tf.methods.register("part_alp")
  class PartALP(ALP):
    reweighted = True

Its fields become flags named after it (`--alp_pairing`), `config.json`
records them, and `PARTModel(classifier, method="part_alp")` or
`method=PartALP(pairing=1.0)` trains it: nothing else needs an edit. The
built-in methods import TensorFlow lazily (`part_tf.lazy`) so that the flags
read their settings without loading it; your own may import it as usual.
"""

import dataclasses
from typing import ClassVar

from part_tf import config as config_lib
from part_tf import lazy
from part_tf import registry

attacks = lazy.load("part_tf.attacks")
tf = lazy.load("tensorflow")


def register(name: str):
  """Class decorator: registers a `Method` subclass as `name` (its settings
  are then named `<name>_<field>`, or as its registered base's are)."""
  def add(cls):
    if not (isinstance(cls, type) and issubclass(cls, Method)):
      raise TypeError(f"register({name!r}) needs a subclass of "
                      f"part_tf.methods.Method, got {cls!r}")
    if cls.flag_prefix is None:
      cls.flag_prefix = f"{name}_"
    registry.METHODS.register(name, cls)
    cls._registered_as = name  # pylint: disable=protected-access
    return cls
  return add


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method (see the module doc): AT's attack pieces, and the
  loss to write.

  Class attributes (not settings):
    reweighted: PART's CAM budget replaces the uniform one after burn-in.
    trains_natural_model: a natural model trains beside the robust one and
      `natural_loss` is its loss (ACT).
    flag_prefix: the start of its settings' names (default: the registered
      name and "_").
  """
  reweighted: ClassVar[bool] = False
  trains_natural_model: ClassVar[bool] = False
  flag_prefix: ClassVar[str | None] = None
  _registered_as: ClassVar[str | None] = None

  # --- how the AEs are crafted -------------------------------------------------

  def attack_init(self):
    """The AEs' start (a `part_tf.attacks` init function)."""
    return attacks.uniform_init

  def attack_loss(self, logits, target):
    """Per-example loss the AEs maximise."""
    return attacks.cross_entropy(logits, target)

  def attack_target(self, out, clean_fn, x, y):
    """The target of `attack_loss`: the labels (AT, MART), TRADES' clean
    probabilities, ... `clean_fn` is the inference-mode model."""
    del out, clean_fn, x
    return y

  # --- what the model trains on -----------------------------------------------

  def train_loss(self, out, y):
    """Per-example loss [B] of the trained model; the model takes its
    (sample-weighted) mean over the global batch."""
    raise NotImplementedError(f"{type(self).__name__} must define "
                              "train_loss(out, y)")

  def natural_loss(self, out, y):
    """Per-example loss of the natural model (`trains_natural_model`)."""
    del out, y
    return None

  # --- settings ----------------------------------------------------------------

  @classmethod
  def settings_name(cls) -> str:
    """The name its settings are listed under."""
    return cls.registered_name_of()

  @classmethod
  def registered_name_of(cls) -> str:
    name = cls.__dict__.get("_registered_as")
    if name is None:
      raise ValueError(f"method {cls.__name__} is not registered: decorate "
                       "it with @part_tf.methods.register(NAME)")
    return name

  def registered_name(self) -> str:
    """The name it is registered under (what `config.json` records)."""
    return type(self).registered_name_of()

  def settings(self) -> dict:
    """{setting name: value} of its hyper-parameters."""
    return {s.name: _jsonable(getattr(self, s.field.name))
            for s in config_lib.component_settings(
                type(self), self.registered_name())}

  def validate(self) -> None:
    """ValueError (one line, naming the setting) for a value it does not
    allow (the bounds and choices of its fields)."""
    for s in config_lib.component_settings(type(self),
                                           self.registered_name()):
      s.check(getattr(self, s.field.name))

  def __post_init__(self):
    self.validate()


def _jsonable(value):
  return list(value) if isinstance(value, tuple) else value
