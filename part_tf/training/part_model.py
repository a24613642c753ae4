"""`PARTModel`: a Keras model whose `train_step` is pixel-reweighted
adversarial training with a registered method (AT, TRADES, MART, ACT, or one
of your own) and any registered regularisers.

One training step, top to bottom (all inside the compiled step):

  x -> CAM of the predicted class -> eps_map -> weighted-budget attack
    -> x_adv -> the method's loss on x_adv + the regularisers' terms
    -> optimiser update (-> regulariser state, e.g. class centres)

During burn-in (and always for the base methods) the budget is uniform. The
model counts its own epochs (the non-trainable variable `epoch`, saved with
the weights and set by `fit`), so `fit(x, y, epochs=E)` switches to the CAM
budgets after `burn_in_epochs` with no callback, also when it resumes.
"""

import copy
import warnings

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from part_tf import attacks
from part_tf import config as config_lib
from part_tf import distribution
from part_tf import registry
from part_tf.cam import eps_map_from_cam
from part_tf.cam.maps import ClassActivationMaps
from part_tf.methods.base import Method
from part_tf.regularisers.base import Regulariser
from part_tf.training import forward

# What a training step and an evaluation step log (ACT adds its natural
# model's loss and clean accuracy).
_TRAIN_LOGS = ("loss", "adv_accuracy", "eps_mean", "full_eps_fraction")
_NATURAL_LOGS = ("natural_model_loss", "natural_model_accuracy")
_TEST_LOGS = ("loss", "accuracy")


@keras.saving.register_keras_serializable(package="part_tf")
class PARTModel(keras.Model):
  """Wraps a functional classifier and trains it with (PART-)adversarial training.

  The wrapper's forward pass is the classifier's, so `predict`/`evaluate`
  behave as usual (natural accuracy); `train_step` crafts AEs and trains on
  them. Settings not given take their defaults from `part_tf.config`
  (`BudgetConfig`, `AttackConfig`), where each is written once.

  Args:
    classifier: functional `keras.Model`, images in [0, 1] -> logits (e.g.
      a `keras.applications` model with `classifier_activation=None`).
    method: a registered method's name ("at", "part", "trades", "part_t",
      "mart", "part_m", "act", "part_act", or your own), or a
      `part_tf.methods.Method` with its hyper-parameters, e.g.
      `part_tf.methods.PartT(beta=3.0)`.
    epsilon: full L-inf budget.
    epsilon_low: budget of the unimportant pixels (PART variants).
    burn_in_epochs: epochs trained with the uniform budget before the CAM
      budgets start (PART variants). The model counts its epochs itself:
      no callback is needed.
    step_size: step size of the training attack.
    num_steps: steps of the training attack.
    attack: a registered attack that crafts training AEs ("pgd": the
      method's own PGD, "mma").
    cam: a registered CAM method.
    cam_layer: the layer to take the CAMs at (default: a layer named
      "cam_features", else the last layer with a spatial output before the
      pooling; a warning says when its maps are 1x1, which makes PART equal
      its base method).
    mask_rule: a registered CAM -> eps_map rule.
    regularisers: `part_tf.regularisers.Regulariser`s added to the loss, each
      with its weight, e.g. `[part_tf.regularisers.Consistency(weight=1.0)]`
      (one of weight 0 is left out).
    weight_decay: L2 penalty added to the gradients before the optimiser
      (PyTorch `SGD(weight_decay=...)` semantics, as in the reference code;
      Keras' own `weight_decay` is decoupled and behaves differently).
    seed: base of the stateless seeds of the random starts (combined with the
      optimiser's step counter, so a resumed run continues the same sequence).
    natural_classifier: the natural model of a method that trains one (ACT):
      functional, same inputs and classes, its own weights.
    **kwargs: passed to `keras.Model` (e.g. `name`). The settings of earlier
      versions (`beta=`, `act_alpha=`, `consistency_weight=`, ...) are still
      read, with a DeprecationWarning.

  Example:
    >>> classifier = part_tf.models.small_cnn((28, 28, 1), 10)
    >>> model = PARTModel(classifier, method="part", epsilon=0.1,
    ...                   epsilon_low=0.07, step_size=0.025, burn_in_epochs=3)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(train_ds, epochs=8)  # AT for 3 epochs, then PART

    PART-T with its hyper-parameter and consistency regularisation:
    >>> model = PARTModel(classifier, method=part_tf.methods.PartT(beta=3.0),
    ...                   regularisers=[part_tf.regularisers.Consistency()])

    ACT, with a natural model of the same architecture:
    >>> model = PARTModel(classifier, method="act",
    ...                   natural_classifier=keras.models.clone_model(
    ...                       classifier), epsilon=0.1, step_size=0.025)
  """

  def __init__(self, classifier, method="part", *, epsilon=None,
               epsilon_low=None, burn_in_epochs=None, step_size=None,
               num_steps=None, attack=None, cam=None, cam_layer=None,
               mask_rule=None, regularisers=(), weight_decay=0.0, seed=0,
               natural_classifier=None, **kwargs):
    method, regularisers, kwargs = _read_earlier_settings(
        method, regularisers, kwargs)
    _refuse_unknown(kwargs)
    method = _as_method(method)
    budget = config_lib.BudgetConfig(**_given(
        epsilon=epsilon, epsilon_low=epsilon_low,
        burn_in_epochs=burn_in_epochs, cam=cam, cam_layer=cam_layer,
        mask_rule=mask_rule))
    attack_config = config_lib.AttackConfig(**_given(
        attack=attack, step_size=step_size, num_steps=num_steps))
    _check_settings(budget, attack_config)
    # A weight of 0 builds nothing: exactly the method without it (as
    # `config.regularisers_from_flat` leaves it out).
    regularisers = tuple(r for r in map(_as_regulariser, regularisers)
                         if r.weight)
    _check_natural_classifier(method, classifier, natural_classifier)
    inputs = keras.Input(shape=classifier.input_shape[1:], name="images")
    super().__init__(inputs=inputs, outputs=classifier(inputs), **kwargs)
    self.method = method
    self.budget_config = budget
    self.attack_config = attack_config
    self.regularisers = regularisers
    self.classifier = classifier
    self.natural_classifier = natural_classifier
    self.weight_decay = float(weight_decay)
    self.seed = int(seed)
    self._cams = (ClassActivationMaps(classifier, self.budget_config.cam,
                                      self.budget_config.cam_layer)
                  if self.method.reweighted else None)
    # The epoch being trained (0-based), counted by `fit`: it switches the
    # CAM budgets on after burn-in, and is saved (and resumed) with the
    # weights. (Runs of earlier versions saved a 0/1 switch here; `fit` and
    # `experiment` set it from the epoch they resume at.)
    self.epoch = self.add_weight(
        name="epoch", shape=(), dtype="int32", initializer="zeros",
        trainable=False)
    self._build_regularisers(classifier)
    self._views = max([r.num_views for r in self.regularisers] + [1])
    self._evaluating = False
    self._train_logs = _TRAIN_LOGS + (
        _NATURAL_LOGS if self.method.trains_natural_model else ())
    self._trackers = {
        name: keras.metrics.Mean(name=name)
        for name in ("loss", "eps_mean", "full_eps_fraction",
                     "natural_model_loss")}
    self._trackers["natural_model_accuracy"] = (
        keras.metrics.SparseCategoricalAccuracy(name="natural_model_accuracy"))
    self._trackers["adv_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
        name="adv_accuracy")
    self._trackers["accuracy"] = keras.metrics.SparseCategoricalAccuracy(
        name="accuracy")

  def _build_regularisers(self, classifier):
    """The feature outputs the regularisers read, and their state (a
    tracked attribute named after the regulariser, so it is saved)."""
    layers = []
    for r in self.regularisers:
      if r.uses_features and r.feature_layer() not in layers:
        layers.append(r.feature_layer())
    self._feature_layers = tuple(layers)
    # The classifier with feature outputs (a plain attribute of an untracked
    # holder: its weights are the classifier's, saved once).
    self._network = _Untracked(
        forward.feature_network(classifier, layers) if layers else classifier)
    self._states = {}
    classes = classifier.output_shape[-1]
    for r in self.regularisers:
      dim = (int(np.prod(self._network.value.outputs[
          1 + layers.index(r.feature_layer())].shape[1:]))
             if r.uses_features else 0)
      state = r.build(classes, dim)
      if state is not None:
        name = r.registered_name()
        setattr(self, name, state)  # tracked: saved and resumed
        self._states[name] = state

  # --- settings, as attributes -----------------------------------------------

  @property
  def epsilon(self) -> float:
    return self.budget_config.epsilon

  @property
  def epsilon_low(self) -> float:
    return self.budget_config.epsilon_low

  @property
  def burn_in_epochs(self) -> int:
    return self.budget_config.burn_in_epochs

  @property
  def step_size(self) -> float:
    return self.attack_config.step_size

  @property
  def num_steps(self) -> int:
    return self.attack_config.num_steps

  @property
  def reweighted(self) -> bool:
    """Whether the method uses CAM budgets after burn-in (PART variants)."""
    return self.method.reweighted

  @property
  def cam(self) -> str:
    return self.budget_config.cam

  @property
  def mask_rule(self) -> str:
    return self.budget_config.mask_rule

  @property
  def cam_layer(self) -> str | None:
    """The layer the CAMs are taken at (None: found as
    `part_tf.cam.find_cam_layer` finds it)."""
    if self._cams is not None:
      return self._cams.layer_name
    return self.budget_config.cam_layer

  # --- the data flow, one named piece each ---------------------------------

  def budget(self, x):
    """x -> eps_map: uniform, or from the CAMs once burn-in is over."""
    uniform = tf.fill(tf.shape(x), tf.constant(self.epsilon, x.dtype))
    if not self.method.reweighted:
      return uniform
    return tf.cond(
        self.epoch >= self.burn_in_epochs,
        lambda: eps_map_from_cam(self._cams(x), x.shape[1:], self.epsilon,
                                 self.epsilon_low,
                                 self.budget_config.mask_rule),
        lambda: uniform)

  def craft(self, x, y, eps_map, seed, out=None):
    """(x, eps_map) -> x_adv: the training attack with this budget and the
    method's attack pieces.

    `out` (the step's `Forward`) gives ACT's attack the natural model's
    clean outputs (in inference mode when not given); the other methods do
    not use it.
    """
    clean_fn = lambda z: self.classifier(z, training=False)
    if out is None:
      out = forward.Forward(self.classifier, x, self.natural_classifier,
                            training=False)
    return registry.ATTACKS.get(self.attack_config.attack).craft(
        clean_fn, x, y, eps_map, self.method, out, self.step_size,
        self.num_steps, seed)

  def step_seed(self):
    """Stateless seed of this step's random starts: (seed, step[, replica])."""
    seed = tf.stack([tf.constant(self.seed, tf.int64),
                     tf.cast(self.optimizer.iterations, tf.int64)])
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      seed = tf.random.experimental.stateless_fold_in(
          seed, context.replica_id_in_sync_group)
    return seed

  # --- Keras hooks -----------------------------------------------------------

  def compile(self, *args, **kwargs):
    """`keras.Model.compile`, plus building the optimiser's slots now.

    Slots created inside the first traced step would make `tf.function` trace
    the (large) step twice, and restoring a backup needs them to exist.
    """
    super().compile(*args, **kwargs)
    if self.optimizer is not None and not self.optimizer.built:
      self.optimizer.build(self._trained_variables())

  def fit(self, *args, callbacks=None, **kwargs):
    """`keras.Model.fit`, counting epochs in `self.epoch` (see the module
    doc): the CAM budgets start after `burn_in_epochs`, also on a resume
    (`initial_epoch`) and over several calls of `fit`. Warns when a PART
    variant's whole fit lies inside burn-in (it trains its base method)."""
    callbacks = [_EpochCounter(), *(callbacks or [])]
    return super().fit(*args, callbacks=callbacks, **kwargs)

  def _trained_variables(self):
    """The robust classifier's trainable variables (then the natural
    model's, for ACT): one optimiser updates both models, each variable with
    its own slots, as two optimisers of the same settings would."""
    variables = list(self.classifier.trainable_variables)
    if self.natural_classifier is not None:
      variables += self.natural_classifier.trainable_variables
    return variables

  def train_step(self, data):
    x, y, weights, present, count = self._training_batch(data)
    variables = self._trained_variables()
    with tf.GradientTape() as tape:
      out = forward.Forward(self._network.value, x, self.natural_classifier,
                            feature_layers=self._feature_layers)
      if self.natural_classifier is not None:
        out.natural_logits()  # ACT: the natural model sees the clean batch

      # --- x -> eps_map -> x_adv (not differentiated) ----------------------
      with tape.stop_recording(), out.frozen():
        eps_map = self.budget(x)
        x_adv = self.craft(x, y, eps_map, self.step_seed(), out)
      out.set_adversarial(x_adv)

      # --- x_adv -> loss: the method's, plus the regularisers' -------------
      per_example, natural_loss = self._per_example_losses(out, y)
      total = self._total_loss(per_example, natural_loss, weights, count,
                               variables)
      scaled = self.optimizer.scale_loss(total)

    # --- update -------------------------------------------------------------
    grads = tape.gradient(scaled, variables)
    self.optimizer.apply(grads, variables)
    for r in self.regularisers:
      r.update(out, y, weights * present,
               self._states.get(r.registered_name()))
    return self._training_logs(out, y, weights, present, eps_map,
                               per_example, natural_loss)

  def _training_batch(self, data):
    """(x, y, weights, present, count) of a training batch: views flattened
    ([B, V, ...] -> [V * B, ...], all first views first), a stand-in for an
    empty replica (`present` 0), and the examples of the global batch."""
    x, y, weights = self._unpack(data, views=self._views)
    count = distribution.sum_over_replicas(
        tf.cast(tf.shape(x)[0] * self._views, tf.float32))
    # 1 for each real example, 0 for the stand-in of an empty replica.
    present = tf.ones_like(weights)
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
      x, y, weights, present = _at_least_one_example(x, y, weights, present)
    if self._views > 1:
      x = tf.concat(tf.unstack(x, axis=1), axis=0)
      y, weights, present = (tf.tile(t, [self._views])
                             for t in (y, weights, present))
    return x, y, weights, present, count

  def _per_example_losses(self, out, y):
    """(per-example loss of the trained model, the natural model's or
    None)."""
    per_example = self.method.train_loss(out, y)
    for r in self.regularisers:
      state = self._states.get(r.registered_name())
      term = r.term(out, y) if state is None else r.term(out, y, state)
      per_example += r.weight * term
    return per_example, self.method.natural_loss(out, y)

  def _total_loss(self, per_example, natural_loss, weights, count,
                  variables):
    """This replica's share of the mean over the global batch: gradients
    are summed over replicas, so the update follows the global mean (Keras'
    "sum_over_batch_size"), also when a partial last batch splits into
    replicas of unequal size."""
    total = tf.reduce_sum(per_example * weights) / count
    if natural_loss is not None:  # its own variables: a separate gradient
      total += tf.reduce_sum(natural_loss * weights) / count
    if self.weight_decay:
      # 0.5 * wd * |w|^2 adds exactly wd * w to the summed gradient
      # (PyTorch's coupled SGD weight decay), and is loss-scaled like the
      # rest; each replica adds its 1/replicas share.
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      total += 0.5 * self.weight_decay / replicas * tf.add_n(
          [tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
           for v in variables])
    return total

  def _training_logs(self, out, y, weights, present, eps_map, per_example,
                     natural_loss):
    """Per-example values: the epoch averages weigh every example once,
    whatever the batch sizes."""
    self._trackers["loss"].update_state(per_example * weights, present)
    self._trackers["adv_accuracy"].update_state(y, out.logits("adv"),
                                                weights * present)
    if natural_loss is not None:
      self._trackers["natural_model_loss"].update_state(
          natural_loss * weights, present)
      self._trackers["natural_model_accuracy"].update_state(
          y, out.natural_logits(), weights * present)
    self._trackers["eps_mean"].update_state(
        tf.reduce_mean(eps_map, axis=[1, 2, 3]), present)
    self._trackers["full_eps_fraction"].update_state(tf.reduce_mean(
        tf.cast(eps_map >= self.epsilon, tf.float32), axis=[1, 2, 3]),
                                                     present)
    return distribution.multi_worker_logs(
        {name: self._trackers[name].result() for name in self._train_logs})

  def test_step(self, data):
    x, y, weights = self._unpack(data)
    logits = self._inference_logits(x)
    self._trackers["loss"].update_state(
        attacks.cross_entropy(logits, y) * weights)
    self._trackers["accuracy"].update_state(y, logits, weights)
    return distribution.multi_worker_logs(
        {name: self._trackers[name].result() for name in _TEST_LOGS})

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras 3 reduces a first batch over the replicas here to build the
    # model, which fails under MultiWorkerMirroredStrategy. A PARTModel is
    # built by its constructor and compile (the classifier is functional,
    # the optimiser is built in `compile`), so there is nothing to build.
    if self.built and (self.optimizer is None or self.optimizer.built):
      return
    super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

  def predict_step(self, data):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    return self._inference_logits(x)

  def _inference_logits(self, x):
    """The classifier's logits in inference mode. Under a strategy with more
    than one replica, a replica whose share of a partial batch is empty gets
    empty logits (TF's convolutions fail on an empty batch); inference syncs
    no replicas, so a tf.cond is safe here."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
      return self.classifier(x, training=False)
    classes = self.classifier.output_shape[-1]
    return tf.cond(
        tf.shape(x)[0] > 0,
        lambda: self.classifier(x, training=False),
        lambda: tf.zeros([0, classes], self.classifier.output.dtype))

  def _unpack(self, data, views=1):
    """(x float32, y int32 [B], sample weights float32 [B]) of a batch.

    With `views` > 1 (training only) x holds that many augmented views of
    each example: [B, views, H, W, C]. Accepts what `model.fit` / `evaluate`
    hand over: `(x, y)` or `(x, y, sample_weight)` (Keras turns
    `class_weight` into the latter), labels of shape [B] or [B, 1]. Anything
    else is a ValueError at trace time that says what was expected.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if y is None:
      raise ValueError("PARTModel trains and evaluates on labelled batches "
                       "(x, y) or (x, y, sample_weight); got images only")
    x = _checked_images(tf.convert_to_tensor(x),
                        tuple(self.classifier.input_shape[1:]), views)
    return x, _labels(y), _sample_weights(sample_weight, y)

  def evaluate(self, *args, **kwargs):
    """`keras.Model.evaluate` (natural loss and accuracy)."""
    evaluating, self._evaluating = self._evaluating, True
    try:
      return super().evaluate(*args, **kwargs)
    finally:
      self._evaluating = evaluating

  @property
  def metrics(self):
    # The metrics of the phase that is running. Keras reads the epoch's
    # results from them only if their names are the step's log keys;
    # otherwise it keeps the last step's logs, which under a distribution
    # strategy are per-replica values averaged, not the global ones.
    names = _TEST_LOGS if self._evaluating else self._train_logs
    return [self._trackers[name] for name in names]

  # --- saving ----------------------------------------------------------------

  def get_config(self):
    return {
        "classifier": keras.saving.serialize_keras_object(self.classifier),
        "method": self.method.registered_name(),
        "method_settings": self.method.settings(),
        "budget": _plain(self.budget_config),
        "attack_config": _plain(self.attack_config),
        "regularisers": [{"name": r.registered_name(), **r.settings()}
                         for r in self.regularisers],
        "weight_decay": self.weight_decay, "seed": self.seed,
        "natural_classifier": (
            None if self.natural_classifier is None else
            keras.saving.serialize_keras_object(self.natural_classifier)),
        "name": self.name,
    }

  @classmethod
  def from_config(cls, config):
    """The model of `get_config`'s dict, or of an earlier version's (flat
    settings: `beta`, `act_alpha`, `consistency_weight`, ...). `config` is
    not changed (Keras' deserialisation empties the dicts it reads)."""
    config = copy.deepcopy(config)
    config["classifier"] = keras.saving.deserialize_keras_object(
        config["classifier"])
    if config.get("natural_classifier") is not None:
      config["natural_classifier"] = keras.saving.deserialize_keras_object(
          config["natural_classifier"])
    if "method_settings" not in config:  # an earlier version's config
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(**config)
    name = config.pop("method")
    method = config_lib.method_from_flat(name, config.pop("method_settings"))
    regularisers = tuple(
        config_lib.regulariser_from_flat(entry.pop("name"), entry)
        for entry in map(dict, config.pop("regularisers")))
    budget, attack = config.pop("budget"), config.pop("attack_config")
    return cls(method=method, regularisers=regularisers, **budget,
               **attack, **config)


class _EpochCounter(keras.callbacks.Callback):
  """Keeps `PARTModel.epoch` at the epoch being trained (see `fit`)."""

  def on_train_begin(self, logs=None):
    self._first_epoch = True

  def on_epoch_begin(self, epoch, logs=None):
    model = self.model
    current = max(int(model.epoch.numpy()), int(epoch))
    model.epoch.assign(current)
    if self._first_epoch:
      # Here, not in on_train_begin: the other callbacks' on_train_begin
      # (a restored backup, the deprecated BurnInSwitch) have run.
      self._first_epoch = False
      self._warn_if_all_burn_in(current, int(epoch))
    if model.method.reweighted and current == model.burn_in_epochs:
      logging.info("epoch %d: pixel-reweighted budgets on", current + 1)

  def on_epoch_end(self, epoch, logs=None):
    self.model.epoch.assign_add(1)

  def _warn_if_all_burn_in(self, current, epoch):
    """Warns if this fit, which trains the model's epochs `current` on
    (0-based), ends inside burn-in (a PART variant then trains its base
    method only)."""
    model = self.model
    remaining = int((self.params or {}).get("epochs") or 0) - epoch
    last = current + remaining  # the number of the last epoch trained
    if model.method.reweighted and remaining > 0 and (
        last <= model.burn_in_epochs):
      warnings.warn(
          f"PARTModel(method={model.method.registered_name()!r}) with "
          f"burn_in_epochs={model.burn_in_epochs} trains up to epoch {last}: "
          "all of it inside burn-in, so these epochs train its base method "
          "with the uniform budget; pass a smaller burn_in_epochs for CAM "
          "budgets", stacklevel=3)


class _Untracked:
  """Holds an object out of Keras' attribute tracking."""

  def __init__(self, value):
    self.value = value


def _given(**values):
  """The arguments that were given (not None)."""
  return {k: v for k, v in values.items() if v is not None}


def _plain(config):
  return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _as_method(method) -> Method:
  if isinstance(method, Method):
    method.registered_name()  # registered, or a one-line error
    return method
  if isinstance(method, type) and issubclass(method, Method):
    return method()
  return config_lib.method_from_name(method)


def _as_regulariser(regulariser) -> Regulariser:
  if isinstance(regulariser, Regulariser):
    regulariser.registered_name()
    return regulariser
  if isinstance(regulariser, str):
    return registry.REGULARISERS.get(regulariser)()
  raise TypeError(f"regularisers must be part_tf.regularisers.Regulariser "
                  f"objects, got {regulariser!r}")


def _check_settings(budget, attack):
  """The configs' own checks (bounds, choices), as the flags make them,
  except that a model may have a zero budget (its AEs are the clean images:
  natural training), as earlier versions allowed; a run may not."""
  for section in (budget, attack):
    for s in config_lib.section_settings(type(section)):
      value = getattr(section, s.field.name)
      if not (s.name == "epsilon" and value == 0):
        s.check(value)
    if hasattr(section, "validate"):
      section.validate()


def _check_natural_classifier(method, classifier, natural_classifier):
  name = method.registered_name()
  if method.trains_natural_model and natural_classifier is None:
    raise ValueError(f"method {name!r} trains a natural model beside the "
                     "robust one: pass natural_classifier")
  if natural_classifier is None:
    return
  if not method.trains_natural_model:
    raise ValueError(f"method {name!r} trains no natural model; "
                     "natural_classifier is for methods like 'act'")
  if {id(v) for v in natural_classifier.trainable_variables} & {
      id(v) for v in classifier.trainable_variables}:
    raise ValueError("the natural model shares weights with the robust "
                     "one; give it its own (e.g. keras.models.clone_model)")
  if (tuple(natural_classifier.input_shape[1:])
      != tuple(classifier.input_shape[1:])
      or natural_classifier.output_shape[-1]
      != classifier.output_shape[-1]):
    raise ValueError(
        f"the natural model maps {natural_classifier.input_shape} to "
        f"{natural_classifier.output_shape}; the robust model maps "
        f"{classifier.input_shape} to {classifier.output_shape}")


# The settings of earlier versions' PARTModel(...) and get_config, read into
# the method's and the regularisers' settings.
_EARLIER_METHOD_SETTINGS = ("beta", "act_alpha", "act_beta",
                            "act_temperature", "trades_clean_passes")
_EARLIER_REGULARISER_SETTINGS = (
    "consistency_weight", "consistency_temperature", "consistency_views",
    "feature_alignment_weight", "center_loss_weight", "center_lr",
    "feature_layer")


def _read_earlier_settings(method, regularisers, kwargs):
  """(method, regularisers, the other kwargs) with an earlier version's
  flat settings (`beta=`, `consistency_weight=`, ...) read, with a
  DeprecationWarning."""
  earlier = {k: kwargs.pop(k) for k in (*_EARLIER_METHOD_SETTINGS,
                                        *_EARLIER_REGULARISER_SETTINGS)
             if k in kwargs}
  if not earlier:
    return method, regularisers, kwargs
  warnings.warn(
      f"PARTModel({', '.join(f'{k}=' for k in earlier)}) is the interface of "
      "part_tf 0.13: pass method=part_tf.methods.<Method>(...) and "
      "regularisers=[part_tf.regularisers.<Regulariser>(weight=...)]",
      DeprecationWarning, stacklevel=3)
  if isinstance(method, str):
    method = config_lib.method_from_flat(method, earlier)
  regularisers = (*regularisers,
                  *config_lib.regularisers_from_flat(earlier))
  return method, regularisers, kwargs


# What a functional `keras.Model` does with its keyword arguments (it
# ignores any other, so a misspelt `epsilon_lo=` would go unnoticed).
_KERAS_ARGUMENTS = ("name", "trainable", "dtype")


def _refuse_unknown(kwargs) -> None:
  """TypeError naming a keyword argument PARTModel does not take (and the
  one meant, when it is close to one)."""
  import difflib  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  known = [*inspect.signature(PARTModel.__init__).parameters,
           *_KERAS_ARGUMENTS]
  for name in kwargs:
    if name not in _KERAS_ARGUMENTS:
      close = difflib.get_close_matches(name, known, n=1)
      raise TypeError(f"PARTModel got an unexpected keyword argument {name!r}"
                      + (f"; did you mean {close[0]!r}?" if close else ""))


def _checked_images(x, expected, views):
  if views > 1:
    expected = (views, *expected)
  if not x.dtype.is_floating:
    raise ValueError(f"PARTModel needs float images with values in [0, 1], "
                     f"got {x.dtype.name} images; divide uint8 images by "
                     "255")
  if (x.shape.rank != len(expected) + 1
      or not x.shape[1:].is_compatible_with(expected)):
    if views > 1:
      raise ValueError(
          f"a regulariser of this model trains on {views} augmented views "
          f"of each example: images of shape {(None, *expected)}, got "
          f"{tuple(x.shape)} (part_tf.data.train_dataset(..., views=2) "
          "makes them)")
    raise ValueError(f"images of shape {tuple(x.shape)} do not fit the "
                     f"classifier's input shape {(None, *expected)}")
  return tf.cast(x, tf.float32)


def _labels(y):
  y = tf.convert_to_tensor(y)
  if y.shape.rank == 2 and y.shape[-1] == 1:  # e.g. keras.datasets.cifar10
    y = tf.squeeze(y, axis=-1)
  if y.shape.rank != 1:
    raise ValueError(
        f"labels must be integer class indices of shape (batch,) or "
        f"(batch, 1), got shape {tuple(y.shape)}; for one-hot labels pass "
        "np.argmax(y, axis=-1)")
  return tf.cast(y, tf.int32)


def _sample_weights(sample_weight, y):
  if sample_weight is None:
    return tf.ones(tf.shape(_labels(y)), tf.float32)
  sample_weight = tf.convert_to_tensor(sample_weight)
  if sample_weight.shape.rank == 2 and sample_weight.shape[-1] == 1:
    sample_weight = tf.squeeze(sample_weight, axis=-1)
  if sample_weight.shape.rank != 1:
    raise ValueError(f"sample_weight must have shape (batch,), got shape "
                     f"{tuple(sample_weight.shape)}")
  return tf.cast(sample_weight, tf.float32)


def _at_least_one_example(x, y, weights, present):
  """A stand-in example of weight 0 for a replica that got none.

  A partial global batch smaller than the number of replicas leaves some
  replicas empty, and TF's convolutions and batch norm fail on an empty
  batch. The stand-in (a black image) adds nothing to the loss, the gradients
  or the metrics; only a non-synchronised batch norm's moving statistics see
  it, on that replica, in that one step. Only data is switched here: control
  flow around the model would break layers that synchronise replicas
  (`BatchNormalization(synchronized=True)`).
  """
  empty = tf.equal(tf.shape(x)[0], 0)
  stand_in = tf.zeros(tf.concat([[1], tf.shape(x)[1:]], axis=0), x.dtype)
  pick = lambda real, fake: tf.cond(empty, lambda: fake, lambda: real)
  return (pick(x, stand_in), pick(y, tf.zeros([1], y.dtype)),
          pick(weights, tf.zeros([1], weights.dtype)),
          pick(present, tf.zeros([1], present.dtype)))
