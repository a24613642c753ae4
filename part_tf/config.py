"""The settings of a run, one small config per component, each default
written once.

A run is a `TrainConfig`: the data, the model, PART's budget and CAM, the
training attack, the method (a registered `part_tf.methods.Method`, whose
fields are its hyper-parameters), the regularisers (registered
`part_tf.regularisers.Regulariser`s, each with its weight), the optimiser and
its schedule, the evaluation and the run itself. Every setting is a field of
one of these dataclasses, with its default there and its help text in the
class' `Attributes:` docstring; the training flags, `--help`, the dataset
presets (`part_tf.presets`), `compare.py`'s sweeps, `visualize.py` and the
docs' settings table are generated from or checked against them.

Each setting has one name, the same as its flag and its key in a run
folder's `config.json` (`TrainConfig.to_flat` / `from_flat`). A method's or
regulariser's fields are named after it (`act_alpha` is ACT's `alpha`,
`consistency_weight` the consistency regulariser's `weight`), unless a
field says otherwise (TRADES' and MART's `beta` share `beta`).

Importing this module imports neither TensorFlow nor Keras.

Example:
  config = TrainConfig.from_flat({"model_dir": "runs/x", "method": "part_t",
                                  "beta": 3.0, "epsilon": 8 / 255})
  config.method        # Trades-style PartT(beta=3.0, clean_passes=1)
  config.budget.epsilon_low   # 7/255, BudgetConfig's default
"""

import dataclasses
import functools
import inspect
import math
import os
import re
import typing

from part_tf import parsing
from part_tf import registry

# Metadata keys of a setting (see `setting`).
_KIND, _CHOICES, _FLAG, _PER_MACHINE, _BOUNDS, _PART_ONLY = (
    "kind", "choices", "flag", "per_machine", "bounds", "part_only")
KINDS = ("str", "int", "float", "bool", "budget", "floats", "ints", "enum")


def setting(default=None, *, kind: str, choices=None, flag: str | None = None,
            per_machine: bool = False, part_only: bool = False, low=None,
            high=None, low_open: bool = False, high_open: bool = False):
  """A config field: its default, how a flag reads it and what it allows.

  The help text is the field's entry in its class' `Attributes:` docstring.

  Args:
    default: the default (written here only).
    kind: one of `KINDS`: how the value is read from a flag ("budget": a
      number or a fraction like 8/255; "floats"/"ints": comma lists).
    choices: for "enum": a tuple of names, the name of a registry of
      `part_tf.registry` ("MODELS", "METHODS", ...), or a function giving
      names; registries are read when they are needed (so that plug-ins
      are included).
    flag: the flag's name, if not the field's own (see the module doc).
    per_machine: the setting may change when a run is resumed (hardware,
      paths, how often to report): it is not compared with `config.json`.
    part_only: only the PART variants use it (the base methods ignore it).
    low, high: inclusive bounds (exclusive with `low_open`/`high_open`).
  """
  metadata = {_KIND: kind, _CHOICES: choices, _FLAG: flag,
              _PER_MACHINE: per_machine, _PART_ONLY: part_only,
              _BOUNDS: (low, high, low_open, high_open)}
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The data a run trains and is evaluated on, and how it is read.

  Attributes:
    dataset: a registered dataset (mnist_offline needs no network), or
      tfds:NAME for any TFDS image classification dataset, e.g.
      tfds:imagenette or tfds:imagenet_resized/64x64 (see image_size,
      num_classes, mean, std).
    data_dir: TFDS data folder (default: TFDS' own, ~/tensorflow_datasets).
    manual_dir: tiny_imagenet: folder holding tiny-imagenet-200.zip or the
      extracted tiny-imagenet-200/ folder, used once to prepare the data in
      data_dir.
    max_train_examples: use only the first N training examples.
    max_test_examples: use only the first N test examples.
    augment: random crop (and flip where the dataset allows it) on the
      training images.
    batch_size: global batch size.
    image_size: tfds:NAME: resize images to this height and width (a
      centred square crop first); needed when the dataset's images differ
      in size.
    num_classes: tfds:NAME: number of classes (default: read from the
      dataset's label feature).
    mean: per-channel mean of the images in [0, 1] that the model subtracts
      (default: none for the paper datasets, which are not normalised, as in
      the reference code; the training images' for the digits; for
      tfds:NAME, measured on up to 10,000 training images).
    std: per-channel standard deviation in [0, 1] that the model divides by
      (default: as for mean).
    input: memory: decode the dataset into memory once; stream: read TFDS
      shards and decode and augment inside tf.data; auto: stream when the
      decoded training split would pass input_memory_budget.
    input_memory_budget: GB of decoded training images that input=auto holds
      in memory.
    data_service: ADDRESS of a tf.data service dispatcher (e.g.
      grpc://host:5000): decoding and augmentation run on its workers.
  """
  dataset: str = setting("mnist_offline", kind="str")
  data_dir: str | None = setting(kind="str", per_machine=True)
  manual_dir: str | None = setting(kind="str", per_machine=True)
  max_train_examples: int | None = setting(kind="int", low=1)
  max_test_examples: int | None = setting(kind="int", low=1)
  augment: bool = setting(True, kind="bool")
  batch_size: int = setting(128, kind="int", low=1)
  image_size: int | None = setting(kind="int", low=8)
  num_classes: int | None = setting(kind="int", low=2)
  mean: tuple | None = setting(kind="floats", low=0, high=1)
  std: tuple | None = setting(kind="floats", low=0, high=1, low_open=True)
  input: str = setting("auto", kind="enum",
                       choices=("auto", "memory", "stream"))
  input_memory_budget: float = setting(4.0, kind="float", low=0,
                                       per_machine=True)
  data_service: str | None = setting(kind="str", per_machine=True)

  def validate(self):
    if self.dataset.startswith("tfds:"):
      if len(self.dataset) == len("tfds:"):
        raise ValueError("dataset tfds: needs a TFDS name, like "
                         "tfds:imagenette")
    elif self.dataset not in registry.DATASETS:
      raise ValueError(f"dataset must be one of "
                       f"{', '.join(registry.DATASETS.names())}, or "
                       "tfds:NAME for a TFDS dataset")
    for name in ("mean", "std"):
      values = getattr(self, name)
      if values is not None and not values:
        raise ValueError(f"{name} needs one number per channel")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The classifier.

  Attributes:
    model: a registered classifier (part_tf.models).
  """
  model: str = setting("small_cnn", kind="enum", choices="MODELS")


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
  """PART's per-pixel budget: the full budget, the reduced one, and the
  CAMs that decide where each applies once burn-in ends.

  Attributes:
    epsilon: full L-inf budget (a number or a fraction like 8/255).
    epsilon_low: budget of the unimportant pixels (PART variants).
    burn_in_epochs: epochs trained with the uniform budget epsilon before
      the CAM budgets start (PART variants).
    cam: CAM method the budgets are made from.
    cam_layer: layer to take the CAMs at (default: a layer named
      cam_features, else the last layer with a spatial output before the
      pooling).
    mask_rule: CAM -> eps_map rule.
  """
  epsilon: float = setting(8 / 255, kind="budget", low=0, high=1,
                           low_open=True, high_open=True)
  epsilon_low: float = setting(7 / 255, kind="budget", low=0, part_only=True)
  burn_in_epochs: int = setting(20, kind="int", low=0, part_only=True)
  cam: str = setting("gradcam_plus_plus", kind="enum", choices="CAM_METHODS",
                     part_only=True)
  cam_layer: str | None = setting(kind="str", part_only=True)
  mask_rule: str = setting("zscore", kind="enum", choices="MASK_RULES",
                           part_only=True)

  def validate(self):
    if self.epsilon_low > self.epsilon:
      raise ValueError(f"epsilon_low ({self.epsilon_low:.4g}) must not be "
                       f"larger than epsilon ({self.epsilon:.4g})")


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  """How the training AEs are crafted.

  Attributes:
    attack: the method's own PGD (pgd), or mma: the worst of 3 targeted
      margin PGD runs.
    step_size: PGD step size of the training AEs.
    num_steps: PGD steps of the training AEs.
  """
  attack: str = setting("pgd", kind="enum",
                        choices=lambda: _training_attacks())
  step_size: float = setting(2 / 255, kind="budget", low=0, low_open=True)
  num_steps: int = setting(10, kind="int", low=1)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimiser and its schedule.

  Attributes:
    epochs: training epochs.
    optimizer: the optimiser.
    learning_rate: initial learning rate.
    momentum: SGD momentum.
    weight_decay: L2 added to the gradients (PyTorch SGD semantics).
    lr_schedule: piecewise and cosine run over all epochs, burn-in included;
      reference is the PART reference code's: the initial rate during
      burn-in, then, counting the epochs after burn-in from 1, multiplied by
      lr_decay_factor from each of the lr_decay_epochs on (its 60,90),
      constant within an epoch.
    lr_decay_epochs: piecewise: epochs after which the rate is multiplied by
      lr_decay_factor, e.g. 60,70; reference: epochs after burn-in (from 1)
      from which it is, e.g. 60,90.
    lr_decay_factor: piecewise and reference: the decay factor.
  """
  epochs: int = setting(80, kind="int", low=1)
  optimizer: str = setting("sgd", kind="enum", choices=("sgd", "adam"))
  learning_rate: float = setting(0.01, kind="float", low=0)
  momentum: float = setting(0.9, kind="float", low=0)
  weight_decay: float = setting(2e-4, kind="float", low=0)
  lr_schedule: str = setting("piecewise", kind="enum", choices=(
      "constant", "piecewise", "cosine", "reference"))
  lr_decay_epochs: tuple = setting((), kind="ints", low=1)
  lr_decay_factor: float = setting(0.1, kind="float", low=0)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What the run measures while and after it trains.

  Attributes:
    eval_every: measure PGD accuracy on the validation split every N epochs
      and keep the most robust epoch (0: only after the last one).
    validation_split: training images held out to choose the most robust
      epoch (best/, export_best/): a count like 1000, a fraction like 0.02, 0
      for none, or auto: 2% of the training images (at least 100 and one per
      class, at most 1,000) when eval_every selects among epochs and the data
      can spare them, else none. The held-out block is fixed by the seed and
      the data; the test split is never used to choose.
    allow_small_validation: accept a validation_split of fewer than 100
      images (or fewer than the classes), too few to choose an epoch
      reliably.
    eval_subset: evaluate at most N images of the validation split each time
      (default: all); with validation_split=0, the first N (default 512)
      test images, for curves only.
    eval_num_steps: PGD steps of the evaluation.
    eval_step_size: PGD step size of the evaluation (default eval_epsilon/4).
    eval_epsilon: budget of the evaluations (default epsilon). Train at a
      larger epsilon than this for an overdesigned budget.
    eval_batch_size: batch size of the evaluations (the attacks' random
      starts follow the batches: evaluate.py uses the run's, so that its
      numbers equal metrics.json's).
  """
  eval_every: int = setting(0, kind="int", low=0, per_machine=True)
  validation_split: str = setting("auto", kind="str")
  allow_small_validation: bool = setting(False, kind="bool",
                                         per_machine=True)
  eval_subset: int | None = setting(kind="int", low=1)
  eval_num_steps: int = setting(20, kind="int", low=1)
  eval_step_size: float | None = setting(kind="budget", low=0,
                                         low_open=True)
  eval_epsilon: float | None = setting(kind="budget", low=0, high=1,
                                       low_open=True, high_open=True)
  eval_batch_size: int = setting(256, kind="int", low=1, per_machine=True)

  def validate(self):
    try:
      parsing.parse_validation_split(self.validation_split)
    except ValueError:
      raise ValueError("validation_split must be auto, a count of images "
                       "like 1000 (0: none), or a fraction like 0.02 "
                       "(below 1)") from None


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Where a run goes and how it runs.

  Attributes:
    model_dir: run folder (created; a run that was killed resumes from it).
    seed: seed of everything random.
    jit_compile: XLA for the train step; auto: on when a GPU is present.
    mixed_precision: Keras mixed-precision policy: mixed_float16 on GPUs,
      mixed_bfloat16 on TPUs.
    deterministic: deterministic TF ops: the same seed gives the same run on
      the same machine.
    export: export the SavedModel at the end.
    image_count: test images (chosen by the seed) whose CAM, eps_map and
      adversarial example are logged to TensorBoard; 0: none.
    image_every: log those pictures every N epochs and at the end of burn-in
      (0: at the end of burn-in and after every epoch after it).
    strategy: tf.distribute strategy. auto: multi_worker when TF_CONFIG
      names several workers, tpu with tpu, mirrored with more than one GPU,
      else one_device.
    tpu: TPU address or name (local: the TPU VM this runs on); selects
      TPUStrategy.
    cpu_devices: split the CPU into N logical devices, so that
      strategy=mirrored has N replicas without GPUs (tests; adds no speed).
    cluster_timeout: seconds each task of a multi-worker job (TF_CONFIG)
      waits for all the others to start, and a run for its data_service
      dispatcher to answer, before it stops with an error naming the
      addresses that did not answer.
  """
  model_dir: str | None = setting(kind="str")
  seed: int = setting(0, kind="int", low=0)
  jit_compile: str = setting("auto", kind="enum",
                             choices=("auto", "true", "false"),
                             per_machine=True)
  mixed_precision: str = setting("none", kind="enum", choices=(
      "none", "mixed_float16", "mixed_bfloat16"))
  deterministic: bool = setting(True, kind="bool")
  export: bool = setting(True, kind="bool", per_machine=True)
  image_count: int = setting(8, kind="int", low=0, per_machine=True)
  image_every: int = setting(0, kind="int", low=0, per_machine=True)
  strategy: str = setting("auto", kind="enum", choices=(
      "auto", "one_device", "mirrored", "multi_worker", "tpu"),
                          per_machine=True)
  tpu: str | None = setting(kind="str", per_machine=True)
  cpu_devices: int = setting(1, kind="int", low=1, per_machine=True)
  cluster_timeout: float = setting(300.0, kind="float", low=0, low_open=True,
                                   per_machine=True)

  def validate(self):
    if self.strategy == "tpu" and not self.tpu:
      raise ValueError("strategy=tpu needs tpu=ADDRESS or NAME")


# The configs of fixed shape, in the order of a run (flags and docs list
# their settings in this order).
SECTIONS = (("data", DataConfig), ("model", ModelConfig),
            ("budget", BudgetConfig), ("attack", AttackConfig),
            ("optimizer", OptimizerConfig), ("evaluation", EvalConfig),
            ("run", RunConfig))


# --- what a setting is ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Setting:
  """One setting as flags and `config.json` see it.

  Attributes:
    name: its flag and `config.json` name.
    field: the dataclass field it is.
    owner: the config class (or component class) holding the field.
    help: its help text (the owner's `Attributes:` entry).
  """
  name: str
  field: dataclasses.Field
  owner: type
  help: str
  off: typing.Any = None

  @property
  def kind(self) -> str:
    """How a flag reads it: the field's `setting(kind=...)`, else its type."""
    kind = self.field.metadata.get(_KIND)
    if kind is not None:
      return kind
    text = str(self.field.type)
    for name in ("bool", "int", "float", "str"):
      if re.search(rf"\b{name}\b", text):
        return name
    return "str"

  @property
  def default(self):
    return _default(self.field)

  @property
  def flag_default(self):
    """The flag's default: the field's, or the value that turns the
    component off (a regulariser's weight: 0)."""
    return self.default if self.off is None else self.off

  @property
  def per_machine(self) -> bool:
    return bool(self.field.metadata.get(_PER_MACHINE))

  def choices(self) -> tuple | None:
    """The allowed names of an "enum" setting (a registry's are read now)."""
    choices = self.field.metadata.get(_CHOICES)
    if isinstance(choices, str):
      return tuple(getattr(_loaded_registry(), choices).names())
    if callable(choices):
      return tuple(choices())
    return tuple(choices) if choices is not None else None

  def check(self, value) -> None:
    """ValueError (one line, naming the setting) unless `value` is
    allowed."""
    check_value(self.name, self.field, value, self.choices())


def _loaded_registry():
  """`part_tf.registry` with the built-in components registered."""
  from part_tf import components  # pylint: disable=g-import-not-at-top,unused-import
  return registry


def _training_attacks():
  from part_tf import attack_catalogue  # pylint: disable=g-import-not-at-top
  return attack_catalogue.training_attacks()


def _default(field: dataclasses.Field):
  if field.default is not dataclasses.MISSING:
    return field.default
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return None


def check_value(name: str, field: dataclasses.Field, value, choices=None):
  """ValueError naming `name` unless `value` fits the field's metadata."""
  if value is None:
    return
  if choices is not None and value not in choices:
    raise ValueError(f"{name} must be one of {', '.join(choices)}, got "
                     f"{value!r}")
  low, high, low_open, high_open = field.metadata.get(
      _BOUNDS, (None, None, False, False))
  values = value if isinstance(value, (tuple, list)) else (value,)
  for v in values:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
      continue
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"{name} must be a finite number, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
      raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}"
                       + _range_end(high, high_open) + f", got {v}")
    if high is not None and (v > high or (high_open and v == high)):
      raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}"
                       f", got {v}")


def _range_end(high, high_open):
  if high is None:
    return ""
  return f" and {'<' if high_open else '<='} {high}"


@functools.lru_cache(maxsize=None)
def attribute_docs(cls) -> dict:
  """{attribute: text} of the `Attributes:` section of `cls`' docstring
  (and of its bases'), each text on one line."""
  docs = {}
  for klass in reversed(cls.__mro__):
    text = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", text, re.M)
    if not match:
      continue
    current = None
    for line in match.group(1).splitlines():
      entry = re.match(r"^  (\w+)(?: \([^)]*\))?: (.*)$", line)
      if entry:
        current = entry.group(1)
        docs[current] = entry.group(2).strip()
      elif current and line.strip():
        docs[current] += " " + line.strip()
  return docs


def section_settings(cls) -> list:
  """The settings of a fixed config class, in field order."""
  docs = attribute_docs(cls)
  return [Setting(f.metadata.get(_FLAG) or f.name, f, cls,
                  docs.get(f.name, ""))
          for f in dataclasses.fields(cls)]


def component_settings(component_cls, component_name: str) -> list:
  """The settings of a method or regulariser class: its fields, named
  `<prefix><field>` (the class' `flag_prefix`, by default its registered
  name and "_") unless a field names its flag."""
  docs = attribute_docs(component_cls)
  prefix = getattr(component_cls, "flag_prefix", None)
  if prefix is None:
    prefix = f"{component_name}_"
  return [Setting(f.metadata.get(_FLAG) or f"{prefix}{f.name}", f,
                  component_cls, docs.get(f.name, ""))
          for f in dataclasses.fields(component_cls)]


def all_settings() -> dict:
  """{name: Setting} of every setting of a training run: the fixed configs'
  and those of every registered method and regulariser (a name shared by
  several components must mean the same in each).

  Raises:
    ValueError: two components define one setting name differently.
  """
  reg = _loaded_registry()
  found = {}
  for _, cls in SECTIONS:
    for s in section_settings(cls):
      found[s.name] = s
  found["method"] = _METHOD_SETTING
  for name, cls in reg.METHODS.items():
    for s in component_settings(cls, name):
      _add_shared(found, s)
  for name, cls in reg.REGULARISERS.items():
    for s in component_settings(cls, name):
      if s.field.name == "weight":  # the flag of a regulariser turns it on
        s = dataclasses.replace(s, off=0.0)
      _add_shared(found, s)
  return found


def used_by(method_name: str, name: str) -> bool:
  """Whether the method registered as `method_name` uses the setting
  `name`: PART's budget settings only the PART variants use, a method's
  hyper-parameters only that method (and methods sharing them, like
  TRADES' and MART's `beta`); the rest every method."""
  reg = _loaded_registry()
  method = reg.METHODS.get(method_name)
  for s in section_settings(BudgetConfig):
    if s.name == name and s.field.metadata.get(_PART_ONLY):
      return method.reweighted
  owners = [cls for n, cls in reg.METHODS.items()
            if name in {s.name for s in component_settings(cls, n)}]
  if owners:
    return name in {s.name for s in component_settings(method, method_name)}
  return True


def paper_weight(regulariser_name: str):
  """The weight a regulariser's class gives it (its paper's), or None."""
  cls = _loaded_registry().REGULARISERS.get(regulariser_name)
  return next(f for f in dataclasses.fields(cls) if f.name == "weight").default


def _add_shared(found, new):
  old = found.get(new.name)
  if old is None:
    found[new.name] = new
    return
  if old.owner is new.owner or issubclass(new.owner, old.owner):
    return
  if (old.kind, old.default) != (new.kind, new.default):
    raise ValueError(
        f"setting {new.name!r} of {new.owner.__name__} clashes with the one "
        f"of {old.owner.__name__} (kind and default must agree)")


@dataclasses.dataclass(frozen=True)
class _MethodHolder:
  """The `method` setting (the method itself is `TrainConfig.method`).

  Attributes:
    method: the training method: at / trades / mart / act are the base
      methods (act: Adversarial Concurrent Training, a robust and a natural
      model); part / part_t / part_m / part_act the same with CAM budgets
      after burn-in; plug-ins add their own.
  """
  method: str = setting("part", kind="enum", choices="METHODS")


_METHOD_SETTING = section_settings(_MethodHolder)[0]


# --- a run's settings -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """All the settings of a training run.

  Attributes:
    data: the data (`DataConfig`).
    model: the classifier (`ModelConfig`).
    budget: PART's budgets and CAMs (`BudgetConfig`).
    attack: the training attack (`AttackConfig`).
    method: the method, with its hyper-parameters (a registered
      `part_tf.methods.Method`).
    regularisers: the regularisers added to the method's loss, each with its
      weight (registered `part_tf.regularisers.Regulariser`s).
    optimizer: the optimiser and schedule (`OptimizerConfig`).
    evaluation: what is measured (`EvalConfig`).
    run: where and how it runs (`RunConfig`).
  """
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  budget: BudgetConfig = BudgetConfig()
  attack: AttackConfig = AttackConfig()
  method: typing.Any = None
  regularisers: tuple = ()
  optimizer: OptimizerConfig = OptimizerConfig()
  evaluation: EvalConfig = EvalConfig()
  run: RunConfig = RunConfig()

  def __post_init__(self):
    if self.method is None:
      object.__setattr__(self, "method", method_from_name(
          _METHOD_SETTING.default))
    self.validate()

  @property
  def method_name(self) -> str:
    return self.method.registered_name()

  def validate(self) -> None:
    """ValueError (one line) for a combination of settings that cannot run.
    """
    for name, _ in SECTIONS:
      section = getattr(self, name)
      for s in section_settings(type(section)):
        s.check(getattr(section, s.field.name))
      if hasattr(section, "validate"):
        section.validate()
    for component in (self.method, *self.regularisers):
      component.validate()
    if (self.method.reweighted
        and self.budget.burn_in_epochs >= self.optimizer.epochs):
      raise ValueError("burn_in_epochs must be smaller than epochs, or the "
                       "pixel-reweighted budgets are never used")
    if self.data.mean is not None and self.data.std is not None and len(
        self.data.mean) != len(self.data.std):
      raise ValueError("mean and std need the same number of channels")
    self._check_mask_rule_channels()
    for regulariser in self.regularisers:
      regulariser.check_run(self)

  def _check_mask_rule_channels(self) -> None:
    """ValueError if the mask rule needs images of a number of channels
    (its `channels` attribute; `official`: 3, RGB) that the registered
    dataset's images do not have, before anything is written (for a
    tfds:NAME dataset the rule itself refuses them, once training starts).
    """
    reg = _loaded_registry()
    needs = getattr(reg.MASK_RULES.get(self.budget.mask_rule), "channels",
                    None)
    if needs is None or self.data.dataset not in reg.DATASETS:
      return
    has = reg.DATASETS.get(self.data.dataset).image_shape[-1]
    if has != needs:
      raise ValueError(
          f"mask_rule={self.budget.mask_rule} needs {needs}-channel images, "
          f"but {self.data.dataset} has {has} channel(s): use "
          "mask_rule=zscore or soft")

  # --- the flat view: flags and config.json --------------------------------

  def to_flat(self) -> dict:
    """{setting name: value} of the settings this run uses: the fixed
    configs', the method's, and every registered regulariser's weight (0
    when off) with the other settings of those that are on. JSON-able."""
    values = {}
    for name, _ in SECTIONS:
      section = getattr(self, name)
      for s in section_settings(type(section)):
        values[s.name] = _jsonable(getattr(section, s.field.name))
    values["method"] = self.method_name
    values.update(self.method.settings())
    reg = _loaded_registry()
    for name, cls in reg.REGULARISERS.items():
      values[f"{name}_weight"] = 0.0
    for regulariser in self.regularisers:
      values.update(regulariser.settings())
    return values

  @classmethod
  def from_flat(cls, values: dict) -> "TrainConfig":
    """The config of flat settings (flags, `config.json`); missing ones take
    their defaults.

    Raises:
      ValueError: an unknown method or a value a setting does not allow.
    """
    values = dict(values)
    sections = {}
    for name, section_cls in SECTIONS:
      kwargs = {}
      for s in section_settings(section_cls):
        if s.name in values and (values[s.name] is not None
                                 or s.default is None):
          kwargs[s.field.name] = _typed(s, values[s.name])
      sections[name] = section_cls(**kwargs)
    method_name = values.get("method") or _METHOD_SETTING.default
    method = method_from_flat(method_name, values)
    regularisers = regularisers_from_flat(values)
    config = cls(method=method, regularisers=regularisers, **sections)
    check_ignored(values)
    return config

  def replace(self, **flat) -> "TrainConfig":
    """A copy with some flat settings changed."""
    values = self.to_flat()
    values.update(flat)
    return TrainConfig.from_flat(values)

  # --- derived -----------------------------------------------------------------

  @property
  def views(self) -> int:
    """Augmented views of each training image a batch holds (2 with
    consistency regularisation)."""
    return max([r.num_views for r in self.regularisers] + [1])

  @property
  def view_augmentation(self) -> str:
    """How the views are augmented ("crop_flip" unless a regulariser asks
    for more)."""
    for regulariser in self.regularisers:
      if regulariser.num_views > 1:
        return regulariser.view_augmentation()
    return "crop_flip"

  def evaluation_budget(self) -> tuple:
    """(budget, PGD step) of the evaluations: eval_epsilon (default
    epsilon) and eval_step_size (default a quarter of that budget)."""
    epsilon = self.evaluation.eval_epsilon or self.budget.epsilon
    return epsilon, self.evaluation.eval_step_size or epsilon / 4

  def per_worker_settings(self) -> tuple:
    """Settings of one machine, which the workers of a multi-worker job
    need not share (where its data are, its devices and memory, its tf.data
    service, how long it waits); the others must be equal on every
    worker."""
    return ("data_dir", "manual_dir", "strategy", "tpu", "cpu_devices",
            "input_memory_budget", "data_service", "cluster_timeout")

  def per_machine_settings(self) -> tuple:
    """Settings that may differ on a resume (hardware, paths, reporting):
    not compared with the run's `config.json`."""
    names = [s.name for _, cls in SECTIONS for s in section_settings(cls)
             if s.per_machine]
    if self.optimizer.lr_schedule != "cosine":
      names.append("epochs")  # the cosine curve spans all epochs
    return tuple(names)


def _jsonable(value):
  if isinstance(value, tuple):
    return list(value)
  return value


def check_ignored(values: dict) -> None:
  """ValueError (one line, naming the setting) for a flat value that no run
  allows, also where this run ignores it (the settings of the methods and
  regularisers it does not use): a wrong value is never silently dropped.
  A regulariser that is off may also refuse settings that only mean
  something when it is on (`Regulariser.check_off`)."""
  for name, s in all_settings().items():
    if values.get(name) is not None:
      s.check(_typed(s, values[name]))
  for name, cls in _loaded_registry().REGULARISERS.items():
    if not values.get(f"{name}_weight"):
      cls.check_off(values)


# What a list or number setting holds, for the message of a value that is
# not one.
_NUMBERS = {"ints": "whole numbers like 60,90", "floats": "numbers like "
            "0.5,0.25", "int": "a whole number", "float": "a number"}


def _typed(s: Setting, value):
  """A flat value (from a flag or JSON) as the field holds it.

  Raises:
    ValueError: (naming the setting) a value that is not of its kind.
  """
  if value is None:
    return None
  kind = s.kind
  if kind in _NUMBERS or kind == "budget":
    try:
      return _number(kind, value)
    except (TypeError, ValueError) as e:
      if kind == "budget":
        raise ValueError(f"{s.name}: {e}") from None
      text = (",".join(str(v) for v in value)
              if isinstance(value, (list, tuple)) else value)
      raise ValueError(f"{s.name} must be {_NUMBERS[kind]}, got "
                       f"{text!r}") from None
  if kind == "bool":
    return bool(value)
  if s.name == "validation_split":
    return parsing.canonical_validation_split(value)
  if s.name in ("data_dir", "manual_dir"):
    return os.path.abspath(os.path.expanduser(value))
  return value


def _number(kind: str, value):
  if kind == "budget":
    return parsing.parse_budget(value)
  if kind == "floats":
    return tuple(float(v) for v in value)
  if kind == "ints":
    return tuple(int(v) for v in value)
  if kind == "int":
    return int(value)
  return float(value)


def method_from_name(name: str):
  """The method registered as `name`, with its default hyper-parameters."""
  return _loaded_registry().METHODS.get(name)()


def method_from_flat(name: str, values: dict):
  """The method `name` with its hyper-parameters taken from `values`."""
  cls = _loaded_registry().METHODS.get(name)
  kwargs = {}
  for s in component_settings(cls, cls.settings_name()):
    if s.name in values:
      kwargs[s.field.name] = _typed(s, values[s.name])
  return cls(**kwargs)


def regularisers_from_flat(values: dict) -> tuple:
  """The registered regularisers whose `<name>_weight` in `values` is not
  0, with their settings taken from `values`."""
  return tuple(regulariser_from_flat(name, values)
               for name in _loaded_registry().REGULARISERS
               if values.get(f"{name}_weight"))


def regulariser_from_flat(name: str, values: dict):
  """The regulariser `name` with its settings taken from `values`."""
  cls = _loaded_registry().REGULARISERS.get(name)
  kwargs = {}
  for s in component_settings(cls, name):
    if s.name in values and values[s.name] is not None:
      kwargs[s.field.name] = _typed(s, values[s.name])
  return cls(**kwargs)
