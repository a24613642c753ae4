"""`PARTModel`: a Keras model whose `train_step` is pixel-reweighted AT
(or TRADES / MART / ACT, see `methods/`), plus any plug-in regularisers
(`regularisers/`).

One training step, top to bottom (all inside the compiled step):

  x -> CAM of the predicted class -> eps_map -> weighted-budget PGD -> x_adv
    -> base-method loss (AT / TRADES / MART / ACT) on x_adv
    + regularisers -> SGD update (-> regulariser state, e.g. class centres)

During burn-in (and always for the base methods) the budget is uniform. The
switch is the non-trainable variable `part_active`, flipped by the
`BurnInSwitch` callback without retracing and saved with the weights.
"""

import keras
import numpy as np
import tensorflow as tf

from part_tf import attacks
from part_tf import distribution
from part_tf.cam import ClassActivationMaps
from part_tf.cam import eps_map_from_cam
from part_tf.cam import MASK_RULES
from part_tf.models import CAM_LAYER
from part_tf.training import forward
from part_tf.training import regularisers as regularisers_lib
from part_tf.training.methods import BASE_METHODS
from part_tf.training.methods import ATTACKS
from part_tf.training.methods import METHODS
from part_tf.training.methods import MethodParams
from part_tf.training.methods.trades import CLEAN_PASSES

# What a training step and an evaluation step log (ACT adds its natural
# model's loss and clean accuracy).
_TRAIN_LOGS = ("loss", "adv_accuracy", "eps_mean", "full_eps_fraction")
_NATURAL_LOGS = ("natural_model_loss", "natural_model_accuracy")
_TEST_LOGS = ("loss", "accuracy")


@keras.saving.register_keras_serializable(package="part_tf")
class PARTModel(keras.Model):
  """Wraps a functional classifier and trains it with (PART-)adversarial training.

  The wrapper's forward pass is the classifier's, so `predict`/`evaluate`
  behave as usual (natural accuracy); `train_step` crafts AEs and trains on them.

  Args:
    classifier: functional `keras.Model`, images in [0, 1] -> logits, with a
      layer named `cam_layer`.
    method: one of `part_tf.training.METHOD_NAMES`: "at", "part",
      "trades", "part_t", "mart", "part_m", "act", "part_act" (see
      `methods/`).
    epsilon: full L-inf budget.
    epsilon_low: budget of the unimportant pixels (PART only).
    step_size: PGD step size.
    num_steps: PGD steps when crafting training AEs.
    cam: CAM method (see `part_tf.cam.CAM_METHODS`).
    mask_rule: one of `part_tf.cam.MASK_RULES`.
    cam_layer: name of the layer to take the CAMs at.
    weight_decay: L2 penalty added to the gradients before the optimiser
      (PyTorch `SGD(weight_decay=...)` semantics, as in the reference code;
      Keras' own `weight_decay` is decoupled and behaves differently).
    beta: weight of the robust (KL) term of TRADES and MART.
    trades_clean_passes: TRADES and PART-T: training-mode passes of the
      clean batch per step, 1, or 2 as the reference code does (its KL
      target is a second pass, after the adversarial one). The loss and
      gradient are the same; with 2, batch norm's moving statistics see
      about 2/3 clean batches instead of 1/2 (see `methods/trades.py`).
      The other methods ignore it.
    attack: "pgd" (the base method's own attack) or "mma" (the worst of 3
      targeted margin PGD runs against the top wrong classes).
    seed: base of the stateless seeds of the random starts (combined with the
      optimiser's step counter, so a resumed run continues the same sequence).
    natural_classifier: ACT's natural model (functional, same inputs and
      classes; "act" and "part_act" need it, the others take none). It trains
      on the clean images beside the robust `classifier`, with the same
      optimiser settings.
    act_alpha, act_beta, act_temperature: ACT's distillation weights of the
      robust and the natural model, and its temperature (paper: 0.9, 0.9, 4).
    consistency_weight, consistency_temperature: consistency regularisation
      (Tack et al.; paper: 1.0, 0.5). Batches must then hold two augmented
      views per example, x of shape [B, 2, H, W, C].
    feature_alignment_weight: weight of the clean/adversarial feature
      distance (Liu & JaJa).
    center_loss_weight, center_lr: centre loss on adversarial features and
      the centres' update rate (Agarwal et al.; Wen et al.: 0.003, 0.5).
    feature_layer: layer whose output the feature regularisers read
      (default: the penultimate layer, the input of the last layer).
    **kwargs: passed to `keras.Model` (e.g. `name`).

  Example:
    >>> classifier = part_tf.models.small_cnn((28, 28, 1), 10)
    >>> model = PARTModel(classifier, method="part", epsilon=0.1,
    ...                   epsilon_low=0.07, step_size=0.025, num_steps=10)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(train_ds, epochs=8, callbacks=[BurnInSwitch(3)])

    ACT, with a natural model of the same architecture:
    >>> model = PARTModel(classifier, method="act",
    ...                   natural_classifier=keras.models.clone_model(
    ...                       classifier), epsilon=0.1, step_size=0.025)
  """

  def __init__(self, classifier, method="part", epsilon=8 / 255,
               epsilon_low=7 / 255, step_size=2 / 255, num_steps=10,
               cam="gradcam_plus_plus", mask_rule="zscore",
               cam_layer=CAM_LAYER, weight_decay=0.0, seed=0, beta=6.0,
               attack="pgd", natural_classifier=None, act_alpha=0.9,
               act_beta=0.9, act_temperature=4.0, consistency_weight=0.0,
               consistency_temperature=0.5, feature_alignment_weight=0.0,
               center_loss_weight=0.0, center_lr=0.5, feature_layer=None,
               trades_clean_passes=1, **kwargs):
    if method not in METHODS:
      raise ValueError(f"unknown method {method!r}; choose one of "
                       f"{tuple(METHODS)}")
    if attack not in ATTACKS:
      raise ValueError(f"unknown attack {attack!r}; choose one of {ATTACKS}")
    if mask_rule not in MASK_RULES:
      raise ValueError(f"unknown mask rule {mask_rule!r}; choose one of "
                       f"{MASK_RULES}")
    if not 0 <= epsilon_low <= epsilon:
      raise ValueError(f"need 0 <= epsilon_low <= epsilon, got epsilon_low="
                       f"{epsilon_low}, epsilon={epsilon}")
    if trades_clean_passes not in CLEAN_PASSES:
      raise ValueError(f"trades_clean_passes must be one of {CLEAN_PASSES}, "
                       f"got {trades_clean_passes!r}")
    if step_size <= 0 or num_steps < 0:
      raise ValueError(f"need step_size > 0 and num_steps >= 0, got "
                       f"{step_size}, {num_steps}")
    concurrent = METHODS[method].concurrent
    if concurrent and natural_classifier is None:
      raise ValueError(f"method {method!r} trains a natural model beside the "
                       "robust one: pass natural_classifier")
    if natural_classifier is not None and not concurrent:
      raise ValueError(f"method {method!r} trains no natural model; "
                       "natural_classifier is for 'act' and 'part_act'")
    if natural_classifier is not None and {
        id(v) for v in natural_classifier.trainable_variables} & {
            id(v) for v in classifier.trainable_variables}:
      raise ValueError("the natural model shares weights with the robust "
                       "one; give it its own (e.g. keras.models.clone_model)")
    if natural_classifier is not None and (
        tuple(natural_classifier.input_shape[1:])
        != tuple(classifier.input_shape[1:])
        or natural_classifier.output_shape[-1]
        != classifier.output_shape[-1]):
      raise ValueError(
          f"the natural model maps {natural_classifier.input_shape} to "
          f"{natural_classifier.output_shape}; the robust model maps "
          f"{classifier.input_shape} to {classifier.output_shape}")
    for name, value in (("act_alpha", act_alpha), ("act_beta", act_beta)):
      if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    if act_temperature <= 0:
      raise ValueError(f"act_temperature must be > 0, got {act_temperature}")
    for name, value in (("consistency_weight", consistency_weight),
                        ("feature_alignment_weight", feature_alignment_weight),
                        ("center_loss_weight", center_loss_weight)):
      if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    inputs = keras.Input(shape=classifier.input_shape[1:], name="images")
    super().__init__(inputs=inputs, outputs=classifier(inputs), **kwargs)
    self.classifier = classifier
    self.method = method
    self.epsilon = float(epsilon)
    self.epsilon_low = float(epsilon_low)
    self.step_size = float(step_size)
    self.num_steps = int(num_steps)
    self.cam = cam
    self.mask_rule = mask_rule
    self.cam_layer = cam_layer
    self.weight_decay = float(weight_decay)
    self.seed = int(seed)
    self.beta = float(beta)
    self.attack = attack
    self.natural_classifier = natural_classifier
    self.act_alpha = float(act_alpha)
    self.act_beta = float(act_beta)
    self.act_temperature = float(act_temperature)
    self.consistency_weight = float(consistency_weight)
    self.consistency_temperature = float(consistency_temperature)
    self.feature_alignment_weight = float(feature_alignment_weight)
    self.center_loss_weight = float(center_loss_weight)
    self.center_lr = float(center_lr)
    self.feature_layer = feature_layer or None
    self.trades_clean_passes = int(trades_clean_passes)
    self._params = MethodParams(beta=self.beta, act_alpha=self.act_alpha,
                                act_beta=self.act_beta,
                                act_temperature=self.act_temperature,
                                trades_clean_passes=self.trades_clean_passes)
    self._base = BASE_METHODS[METHODS[method].base]
    self._reweighted = METHODS[method].reweighted
    self._cams = (ClassActivationMaps(classifier, cam, cam_layer)
                  if self._reweighted else None)
    self.part_active = self.add_weight(
        name="part_active", shape=(), dtype="int32", initializer="zeros",
        trainable=False)
    # The regularisers of non-zero weight, as (weight, regulariser).
    self._regularisers = []
    if self.consistency_weight:
      self._regularisers.append((self.consistency_weight,
                                 regularisers_lib.Consistency(
                                     self.consistency_temperature)))
    if self.feature_alignment_weight:
      self._regularisers.append((self.feature_alignment_weight,
                                 regularisers_lib.FeatureAlignment()))
    with_features = self.feature_alignment_weight or self.center_loss_weight
    # The classifier with a feature output (a plain attribute of an untracked
    # holder: its weights are the classifier's, saved once).
    self._network = _Untracked(
        forward.feature_network(classifier, self.feature_layer)
        if with_features else classifier)
    if self.center_loss_weight:
      feature_dim = int(np.prod(self._network.value.outputs[1].shape[1:]))
      # A tracked attribute: the centres are saved and resumed.
      self.center_loss = regularisers_lib.CenterLoss(
          classifier.output_shape[-1], feature_dim, self.center_lr,
          name="center_loss")
      self._regularisers.append((self.center_loss_weight, self.center_loss))
    self._with_features = bool(with_features)
    self._views = 2 if any(r.needs_views for _, r in self._regularisers) else 1
    self._evaluating = False
    self._train_logs = _TRAIN_LOGS + (_NATURAL_LOGS if concurrent else ())
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

  # --- the data flow, one named piece each ---------------------------------

  def budget(self, x):
    """x -> eps_map: uniform, or from the CAMs once `part_active` is set."""
    uniform = tf.fill(tf.shape(x), tf.constant(self.epsilon, x.dtype))
    if not self._reweighted:
      return uniform
    return tf.cond(
        self.part_active > 0,
        lambda: eps_map_from_cam(self._cams(x), x.shape[1:], self.epsilon,
                                 self.epsilon_low, self.mask_rule),
        lambda: uniform)

  def craft(self, x, y, eps_map, seed, out=None):
    """(x, eps_map) -> x_adv: the base method's attack with this budget.

    `out` (the step's `Forward`) gives ACT's attack the natural model's
    clean outputs (in inference mode when not given); the other methods do
    not use it.
    """
    clean_fn = lambda z: self.classifier(z, training=False)
    if out is None:
      out = forward.Forward(self.classifier, x, self.natural_classifier,
                            training=False)
    if self.attack == "mma":
      return attacks.mma(clean_fn, x, y, eps_map, self.step_size,
                         self.num_steps, k=3,
                         init_fn=self._base.attack_init, seed=seed)
    return attacks.pgd(
        clean_fn, x,
        self._base.attack_target(out, clean_fn, x, y, self._params), eps_map,
        step_size=self.step_size, num_steps=self.num_steps,
        loss_fn=self._base.attack_loss, init_fn=self._base.attack_init,
        seed=seed)

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

  def _trained_variables(self):
    """The robust classifier's trainable variables (then the natural
    model's, for ACT): one optimiser updates both models, each variable with
    its own slots, as two optimisers of the same settings would."""
    variables = list(self.classifier.trainable_variables)
    if self.natural_classifier is not None:
      variables += self.natural_classifier.trainable_variables
    return variables

  def train_step(self, data):
    x, y, weights = self._unpack(data, views=self._views)
    variables = self._trained_variables()
    count = distribution.sum_over_replicas(
        tf.cast(tf.shape(x)[0] * self._views, tf.float32))
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    # 1 for each real example, 0 for the stand-in of an empty replica.
    present = tf.ones_like(weights)
    if replicas > 1:
      x, y, weights, present = _at_least_one_example(x, y, weights, present)
    if self._views > 1:  # [B, V, ...] -> [V * B, ...], all first views first
      x = tf.concat(tf.unstack(x, axis=1), axis=0)
      y, weights, present = (tf.tile(t, [self._views])
                             for t in (y, weights, present))

    with tf.GradientTape() as tape:
      out = forward.Forward(self._network.value, x, self.natural_classifier,
                            with_features=self._with_features)
      if self.natural_classifier is not None:
        out.natural_logits()  # ACT: the natural model sees the clean batch

      # --- x -> eps_map -> x_adv (not differentiated) ----------------------
      with tape.stop_recording(), out.frozen():
        eps_map = self.budget(x)
        x_adv = self.craft(x, y, eps_map, self.step_seed(), out)
      out.set_adversarial(x_adv)

      # --- x_adv -> loss: the method's, plus the regularisers' -------------
      per_example = self._base.train_loss(out, y, self._params)
      for weight, regulariser in self._regularisers:
        per_example += weight * regulariser(out, y)
      natural_loss = None
      if self._base.natural_loss is not None:
        natural_loss = self._base.natural_loss(out, y, self._params)
      # This replica's share of the mean over the global batch: gradients
      # are summed over replicas, so the update follows the global mean
      # (Keras' "sum_over_batch_size"), also when a partial last batch splits
      # into replicas of unequal size.
      total = tf.reduce_sum(per_example * weights) / count
      if natural_loss is not None:  # its own variables: a separate gradient
        total += tf.reduce_sum(natural_loss * weights) / count
      if self.weight_decay:
        # 0.5 * wd * |w|^2 adds exactly wd * w to the summed gradient
        # (PyTorch's coupled SGD weight decay), and is loss-scaled like the
        # rest; each replica adds its 1/replicas share.
        total += 0.5 * self.weight_decay / replicas * tf.add_n(
            [tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
             for v in variables])
      scaled = self.optimizer.scale_loss(total)
    # --- update -------------------------------------------------------------
    grads = tape.gradient(scaled, variables)
    self.optimizer.apply(grads, variables)
    for _, regulariser in self._regularisers:
      regulariser.update(out, y, weights * present)

    # --- metrics ---------------------------------------------------------
    # Per-example values: the epoch averages weigh every example once,
    # whatever the batch sizes.
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

    With `views` > 1 (consistency regularisation, training only) x holds that
    many augmented views of each example: [B, views, H, W, C].

    Accepts what `model.fit` / `evaluate` hand over: `(x, y)` or
    `(x, y, sample_weight)` (Keras turns `class_weight` into the latter),
    labels of shape [B] or [B, 1]. Anything else is a ValueError at trace
    time that says what was expected.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if y is None:
      raise ValueError("PARTModel trains and evaluates on labelled batches "
                       "(x, y) or (x, y, sample_weight); got images only")
    x = tf.convert_to_tensor(x)
    expected = tuple(self.classifier.input_shape[1:])
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
            f"consistency regularisation trains on {views} augmented views "
            f"of each example: images of shape {(None, *expected)}, got "
            f"{tuple(x.shape)} (part_tf.data.train_dataset(..., views=2) "
            "makes them)")
      raise ValueError(f"images of shape {tuple(x.shape)} do not fit the "
                       f"classifier's input shape {(None, *expected)}")
    x = tf.cast(x, tf.float32)
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] == 1:  # e.g. keras.datasets.cifar10
      y = tf.squeeze(y, axis=-1)
    if y.shape.rank != 1:
      raise ValueError(
          f"labels must be integer class indices of shape (batch,) or "
          f"(batch, 1), got shape {tuple(y.shape)}; for one-hot labels pass "
          "np.argmax(y, axis=-1)")
    y = tf.cast(y, tf.int32)
    if sample_weight is None:
      return x, y, tf.ones(tf.shape(y), tf.float32)
    sample_weight = tf.convert_to_tensor(sample_weight)
    if sample_weight.shape.rank == 2 and sample_weight.shape[-1] == 1:
      sample_weight = tf.squeeze(sample_weight, axis=-1)
    if sample_weight.shape.rank != 1:
      raise ValueError(f"sample_weight must have shape (batch,), got shape "
                       f"{tuple(sample_weight.shape)}")
    return x, y, tf.cast(sample_weight, tf.float32)

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

  @property
  def reweighted(self) -> bool:
    """Whether the method uses CAM budgets after burn-in (PART variants)."""
    return self._reweighted

  def get_config(self):
    return {
        "classifier": keras.saving.serialize_keras_object(self.classifier),
        "method": self.method, "epsilon": self.epsilon,
        "epsilon_low": self.epsilon_low, "step_size": self.step_size,
        "num_steps": self.num_steps, "cam": self.cam,
        "mask_rule": self.mask_rule, "cam_layer": self.cam_layer,
        "weight_decay": self.weight_decay, "seed": self.seed,
        "beta": self.beta, "attack": self.attack,
        "natural_classifier": (
            None if self.natural_classifier is None else
            keras.saving.serialize_keras_object(self.natural_classifier)),
        "act_alpha": self.act_alpha, "act_beta": self.act_beta,
        "act_temperature": self.act_temperature,
        "consistency_weight": self.consistency_weight,
        "consistency_temperature": self.consistency_temperature,
        "feature_alignment_weight": self.feature_alignment_weight,
        "center_loss_weight": self.center_loss_weight,
        "center_lr": self.center_lr, "feature_layer": self.feature_layer,
        "trades_clean_passes": self.trades_clean_passes,
        "name": self.name,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["classifier"] = keras.saving.deserialize_keras_object(
        config["classifier"])
    if config.get("natural_classifier") is not None:
      config["natural_classifier"] = keras.saving.deserialize_keras_object(
          config["natural_classifier"])
    return cls(**config)


class _Untracked:
  """Holds an object out of Keras' attribute tracking."""

  def __init__(self, value):
    self.value = value


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
