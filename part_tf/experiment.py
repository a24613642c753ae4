"""A complete PART training run, top to bottom: setup, data, model, optimiser,
callbacks, fit (resuming a killed run), evaluation, export.

`scripts/train.py` turns its flags into a `TrainConfig` and calls `train`.
Everything a run writes goes under `model_dir`, whose lock it holds and whose
state it checks first (`part_tf.run_folder`):

  .lock              who is using the folder (an flock while they are)
  config.json        the settings (a resumed run must match them)
  backup/            resumable epoch-end backups (weights, optimiser, switch)
  log.csv            one row per epoch (loss, adv_accuracy, eps_mean, ...)
  tensorboard/       the same as TensorBoard events, PART's pictures
                     (pictures/) and the run's hparams entry (hparams/)
  classifier.keras   the trained classifier (the robust one for ACT)
  natural_classifier.keras  ACT's natural model
  export/<epochs>/   SavedModel of the last epoch's classifier, for
                     serving (see `part_tf.export`)
  best/              backups of the classifier of the most robust epoch,
                     chosen on the validation split (`--validation_split`)
  best_classifier.keras   that classifier, once training ends
  export_best/<epoch>/    its SavedModel: point TF Serving at export_best/
  metrics.json       final natural and PGD-20 accuracy on the test split,
                     the same for the best-robust epoch ("best", chosen on
                     the validation split, never on the test split) and
                     for ACT's natural model ("natural_model")
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from part_tf import addresses
from part_tf import data
from part_tf import distribution
from part_tf import evaluation
from part_tf import io_utils
from part_tf import multi_worker
from part_tf import pictures
from part_tf import run_folder
from part_tf.data import class_names
from part_tf.data import validation
from part_tf.data import streaming
from part_tf.export import export_classifier
from part_tf.models import build_model
from part_tf.training import BurnInSwitch
from part_tf.training import SyncReplicaCopies
from part_tf.training import PARTModel
from part_tf.training.methods import METHODS
from part_tf.training.checkpointing import AtomicBackupAndRestore
from part_tf.training.checkpointing import load_weights
from part_tf.training.checkpointing import restore
from part_tf.training.checkpointing import start_backups
from part_tf.training.image_summaries import ImagePanels
from part_tf.training.image_summaries import write_hparams
from part_tf.training.progress import EpochLog
from part_tf_flags import check_local_path
from part_tf_flags.train_flags import canonical_validation_split


NATURAL_CLASSIFIER_FILE = "natural_classifier.keras"
BEST_CLASSIFIER_FILE = run_folder.CLASSIFIER_FILES["best"]
EXPORT_BEST_DIR = run_folder.EXPORT_BEST_DIR


@dataclasses.dataclass
class TrainConfig:
  """Settings of one run; the fields mirror the flags of scripts/train.py."""
  model_dir: str
  dataset: str = "mnist_offline"
  data_dir: str | None = None
  manual_dir: str | None = None
  max_train_examples: int | None = None
  max_test_examples: int | None = None
  augment: bool = True
  model: str = "small_cnn"
  method: str = "part"
  beta: float = 6.0
  attack: str = "pgd"
  act_alpha: float = 0.9
  act_beta: float = 0.9
  act_temperature: float = 4.0
  act_natural_model: str | None = None
  consistency_weight: float = 0.0
  consistency_temperature: float = 0.5
  feature_alignment_weight: float = 0.0
  center_loss_weight: float = 0.0
  center_lr: float = 0.5
  feature_layer: str | None = None
  epsilon: float = 8 / 255
  epsilon_low: float = 7 / 255
  step_size: float = 2 / 255
  num_steps: int = 10
  burn_in_epochs: int = 20
  cam: str = "gradcam_plus_plus"
  mask_rule: str = "zscore"
  cam_layer: str = "cam_features"
  epochs: int = 80
  batch_size: int = 128
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 2e-4
  lr_schedule: str = "piecewise"
  lr_decay_epochs: tuple = ()
  lr_decay_factor: float = 0.1
  eval_every: int = 0
  validation_split: str = "auto"
  eval_subset: int | None = None
  eval_num_steps: int = 20
  eval_step_size: float | None = None
  eval_epsilon: float | None = None
  image_count: int = 8
  image_every: int = 0
  seed: int = 0
  jit_compile: str = "auto"
  mixed_precision: str = "none"
  deterministic: bool = True
  export: bool = True
  strategy: str = "auto"
  tpu: str | None = None
  cpu_devices: int = 1
  input: str = "auto"
  input_memory_budget: float = 4.0
  data_service: str | None = None
  cluster_timeout: float = distribution.DEFAULT_CLUSTER_TIMEOUT
  image_size: int | None = None
  num_classes: int | None = None
  mean: tuple | None = None
  std: tuple | None = None

  # Settings that may change when a run is resumed (the hardware it runs on,
  # and where its data comes from, included).
  RESUMABLE_CHANGES = ("epochs", "eval_every", "export", "jit_compile",
                       "data_dir", "manual_dir", "image_count", "image_every",
                       "strategy", "tpu", "cpu_devices",
                       "input_memory_budget", "data_service",
                       "cluster_timeout")
  # Settings of one machine, which the workers of a multi-worker job need
  # not share (where its data are, its devices and memory, its tf.data
  # service, how long it waits); the others must be equal on every worker.
  PER_WORKER = ("data_dir", "manual_dir", "strategy", "tpu", "cpu_devices",
                "input_memory_budget", "data_service", "cluster_timeout")

# Settings added after runs were first written, with the value that
# reproduces what those runs did (their config.json lacks them).
_ADDED_SETTINGS = {"input": "auto", "image_size": None, "num_classes": None,
                   "mean": None, "std": None, "eval_epsilon": None,
                   "act_alpha": 0.9, "act_beta": 0.9, "act_temperature": 4.0,
                   "act_natural_model": None, "consistency_weight": 0.0,
                   "consistency_temperature": 0.5,
                   "feature_alignment_weight": 0.0, "center_loss_weight": 0.0,
                   "center_lr": 0.5, "feature_layer": None,
                   "cluster_timeout": distribution.DEFAULT_CLUSTER_TIMEOUT,
                   # Before the validation split, the best epoch was chosen
                   # on the first 512 test images (see `_upgrade`).
                   "validation_split": "0"}


def settings(config: TrainConfig) -> dict:
  """The run's settings as written to `config.json`.

  `model_dir` is not one of them: the folder is the run, whatever path names
  it. Data folders are made absolute so that `evaluate.py` finds the data
  from any working directory.
  """
  values = json.loads(json.dumps(dataclasses.asdict(config)))
  del values["model_dir"]
  for name in ("data_dir", "manual_dir"):
    if values[name] is not None:
      values[name] = os.path.abspath(os.path.expanduser(values[name]))
  values["validation_split"] = canonical_validation_split(
      values["validation_split"])
  return values


def _upgrade(old: dict | None) -> None:
  """Reads a `config.json` of an older version as this version would write
  it (in place), so that such runs can be resumed."""
  if old is None:
    return
  if "validation_split" not in old and old.get("eval_every") == 0 and (
      old.get("eval_subset") == 512):
    # Evaluated after the last epoch only, on the first 512 test images:
    # what "auto" and the default --eval_subset do now (without keeping that
    # one epoch as "best"), so the same command resumes it.
    old.update(validation_split="auto", eval_subset=None)
  for name, value in _ADDED_SETTINGS.items():
    old.setdefault(name, value)
  if isinstance(old.get("mixed_precision"), bool):
    old["mixed_precision"] = ("mixed_float16" if old["mixed_precision"]
                              else "none")


def _resumable_changes(config):
  resumable = set(TrainConfig.RESUMABLE_CHANGES)
  if config.lr_schedule == "cosine":
    resumable.discard("epochs")  # the cosine curve spans all epochs
  return resumable


def _drop_log_rows_from(path, epoch):
  """Keeps the rows of epochs before `epoch`: the ones a resume won't redo.

  The CSV row of an epoch is written before its backup, so a kill in between
  leaves a row that the resumed run writes again.
  """
  if not os.path.exists(path):
    return
  epochs = run_folder.logged_epochs(path)  # checks every row
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines(keepends=True)
  rows = [line for line in lines[1:] if line.strip()]
  kept = lines[:1] + [line for line, e in zip(rows, epochs) if e < epoch]
  if epoch == 0:
    kept = []
  if len(kept) != len(lines):
    io_utils.atomic_write_text(path, "".join(kept))


def _learning_rate(config, steps_per_epoch):
  if config.lr_schedule == "constant":
    return config.learning_rate
  if config.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch)
  epochs = sorted(int(e) for e in config.lr_decay_epochs)
  if not epochs:
    return config.learning_rate
  return keras.optimizers.schedules.PiecewiseConstantDecay(
      boundaries=[e * steps_per_epoch for e in epochs],
      values=[config.learning_rate * config.lr_decay_factor ** i
              for i in range(len(epochs) + 1)])


def _optimizer(config, steps_per_epoch):
  lr = _learning_rate(config, steps_per_epoch)
  if config.optimizer == "sgd":
    return keras.optimizers.SGD(lr, momentum=config.momentum)
  if config.optimizer == "adam":
    return keras.optimizers.Adam(lr)
  raise ValueError(f"unknown optimizer {config.optimizer!r}")


def train(config: TrainConfig, out=None) -> dict:
  """Runs (or resumes) training and returns the final metrics.

  Creates the `tf.distribute` strategy first (`part_tf.distribution`), so
  call it before TensorFlow has run anything else when the run spans several
  workers or a TPU. The chief (the only process of a one-process run) holds
  the run folder's lock throughout (see `part_tf.run_folder`); a start that
  fails before training begins leaves the folder as it found it (a folder it
  created is removed again). Other workers of a multi-worker job take no
  lock and write nothing to `model_dir`: they work on a private copy of its
  backups in a temporary folder, removed at the end.

  Args:
    config: the run's settings.
    out: text stream for the settings, one line per epoch (and a progress
      line during long epochs if it is a terminal) and the results, e.g.
      `sys.stdout`; None prints nothing. Only the chief prints.

  A multi-worker job checks that it can start before the folder is touched:
  every worker's TF_CONFIG port is free, all of them join within
  `config.cluster_timeout` seconds, and they run with the same settings
  (all but `TrainConfig.PER_WORKER`); so does a run with a tf.data service,
  whose dispatcher must answer within that time.

  Raises:
    ValueError: bad settings, data or run folder (one-line messages;
      `run_folder.RunFolderError` for the folder), or a job that cannot
      start (see above).
    OSError: the folder cannot be written.
  """
  for name in ("model_dir", "data_dir", "manual_dir"):
    check_local_path(name, getattr(config, name))
  model_dir = os.path.abspath(os.path.expanduser(config.model_dir))
  if config.data_service:
    _check_data_service(config.data_service, config.cluster_timeout)
  distribution.split_cpu(config.cpu_devices)
  strategy = distribution.create(config.strategy, config.tpu,
                                 config.cluster_timeout)
  worker = distribution.cluster()
  if distribution.kind(strategy) == "multi_worker":
    multi_worker.check_same_everywhere(
        worker, {name: value for name, value in settings(config).items()
                 if name not in TrainConfig.PER_WORKER},
        config.cluster_timeout)
  if distribution.kind(strategy) != "multi_worker" or worker.is_chief:
    with run_folder.locked(model_dir) as created:
      made = []  # folders this start created, removed again if it fails
      progress = {"started": False}
      try:
        return _train(config, strategy, model_dir, model_dir, out, made,
                      progress)
      except BaseException:
        if not progress["started"]:
          if created:
            shutil.rmtree(model_dir, ignore_errors=True)
          else:
            for folder in reversed(made):
              with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if still empty
        raise
  # A worker other than the chief: the same steps (they synchronise with the
  # chief), on a copy of the folder's backups; nothing of it is kept.
  # Named by folder and task, so that a restarted worker removes what a
  # killed one left.
  work_dir = os.path.join(tempfile.gettempdir(), "part_tf-{}-{}{}".format(
      hashlib.sha1(model_dir.encode()).hexdigest()[:12], worker.task_type,
      worker.task_index))
  shutil.rmtree(work_dir, ignore_errors=True)
  os.makedirs(work_dir)
  try:
    for name in (run_folder.BACKUP_DIR, run_folder.BEST_DIR):
      if os.path.isdir(os.path.join(model_dir, name)):
        shutil.copytree(os.path.join(model_dir, name),
                        os.path.join(work_dir, name))
    return _train(config, strategy, model_dir, work_dir, None, [],
                  {"started": False})
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)


def _train(config, strategy, model_dir, write_dir, out, made,
           progress) -> dict:
  """`train` inside the lock: reads the state of `model_dir`, writes to
  `write_dir` (the same folder, except on workers other than the chief)."""
  def report(line):
    if out is not None:
      out.write(line + "\n")
      out.flush()

  # --- Setup: what the folder holds, and whether this run may use it -------
  chief = write_dir == model_dir
  backup_dir = os.path.join(write_dir, run_folder.BACKUP_DIR)
  best_dir = os.path.join(write_dir, run_folder.BEST_DIR)
  config_path = os.path.join(write_dir, run_folder.CONFIG_FILE)
  log_path = os.path.join(write_dir, run_folder.LOG_FILE)
  values = settings(config)
  state = run_folder.inspect(model_dir)
  _upgrade(state.config)
  start_epoch = run_folder.check_resume(state, values, config.epochs,
                                        _resumable_changes(config))
  if chief:
    run_folder.remove_stale_temporaries(model_dir)
  folders = [write_dir, backup_dir, best_dir,
             os.path.join(write_dir, run_folder.TENSORBOARD_DIR)]
  if config.export:
    folders.append(os.path.join(write_dir, run_folder.EXPORT_DIR))
    if os.path.isdir(os.path.join(write_dir, run_folder.EXPORT_BEST_DIR)):
      # (Made, if needed, at the end inside the folder checked here.)
      folders.append(os.path.join(write_dir, run_folder.EXPORT_BEST_DIR))
  for folder in folders:
    if not os.path.isdir(folder):
      made.append(folder)
    run_folder.check_writable(folder)
  replicas = strategy.num_replicas_in_sync
  values.update(strategy_used=distribution.kind(
      strategy), num_replicas=replicas)
  report(_settings_line(config, model_dir, strategy))
  late = [e for e in config.lr_decay_epochs if int(e) >= config.epochs]
  if config.lr_schedule == "piecewise" and late:
    report(f"note: the learning rate does not decay after epoch"
           f"{'s' if len(late) > 1 else ''} {','.join(str(e) for e in late)}"
           f" within {_count(config.epochs, 'epoch')} (--lr_decay_epochs)")

  gpus = tf.config.list_physical_devices("GPU")
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  if config.mixed_precision != "none":
    keras.mixed_precision.set_global_policy(config.mixed_precision)
  tpu = distribution.kind(strategy) == "tpu"
  jit = {"auto": bool(gpus) or tpu, "true": True,
         "false": False}[config.jit_compile]

  # --- Data ------------------------------------------------------------------
  data_dir = config.data_dir and os.path.expanduser(config.data_dir)
  spec = data.resolve_spec(config.dataset, data_dir, config.image_size,
                           config.num_classes, config.mean, config.std,
                           config.manual_dir)
  # Consistency regularisation trains on two augmented views of each image.
  views = 2 if config.consistency_weight else 1
  if views > 1 and not (config.augment and (spec.crop_padding or spec.flip)):
    raise ValueError(
        "--consistency_weight compares two augmentations of each image, but "
        + ("--noaugment turns augmentation off" if not config.augment else
           f"{config.dataset} is trained without augmentation (no crop "
           "padding, no flip)"))
  if config.input != "memory":  # the size decides; loading prepares too
    data.prepare(spec, data_dir, config.manual_dir)
  input_mode = streaming.choose(config.input, spec, data_dir,
                                config.max_train_examples,
                                config.input_memory_budget)
  if config.data_service and input_mode == "memory" and (
      distribution.kind(strategy) == "multi_worker"):
    raise ValueError("--data_service with several workers needs "
                     "--input=stream (each worker then serves its own files)")
  if input_mode == "memory":
    train_data, test_data, spec = data.load(
        config.dataset, data_dir=data_dir, manual_dir=config.manual_dir,
        max_train=config.max_train_examples,
        max_test=config.max_test_examples, spec=spec)
    block = _validation_block(config, state, start_epoch,
                              len(train_data.labels))
    held_out = None
    if block.size:
      train_data, held_out = block.split_arrays(train_data)
    num_train = len(train_data.labels)
    if config.data_service and train_data.images.nbytes > 1e9:
      raise ValueError("--data_service sends in-memory data inside the "
                       "dataset's graph, which must stay under 2 GB: use "
                       "--input=stream")
    train_ds = _with_data_service(data.train_dataset(
        train_data, spec, config.batch_size, seed=config.seed,
        start_epoch=start_epoch, epochs=config.epochs,
        augment=config.augment, views=views), config.data_service)
    if distribution.kind(strategy) == "multi_worker":
      # Each worker takes its replicas' shares of every global batch.
      train_ds = train_ds.with_options(data.shard_by_data())
    # TPUs need static shapes: evaluation drops a partial last batch there.
    test_ds = data.eval_dataset(test_data, config.batch_size,
                                drop_remainder=tpu)
  else:
    available = streaming.num_examples(spec, spec.train_split, data_dir,
                                       config.max_train_examples)
    block = _validation_block(config, state, start_epoch, available)
    train_split, held_out = None, None
    if block.size:  # the same images as in memory, read as split slices
      train_split, validation_split = block.tfds_splits(spec.train_split)
      held_out = _first_examples(streaming.eval_stream(
          spec, config.batch_size, split=validation_split,
          data_dir=data_dir), "the validation split")
    num_train = available - block.size

    def pipeline(context):
      return _with_data_service(streaming.train_stream(
          spec, context.get_per_replica_batch_size(config.batch_size),
          seed=config.seed, start_epoch=start_epoch, augment=config.augment,
          data_dir=data_dir, limit=config.max_train_examples,
          input_context=context, views=views, split=train_split),
                                config.data_service)
    train_ds = strategy.distribute_datasets_from_function(pipeline)
    test_ds = streaming.eval_stream(spec, config.batch_size,
                                    data_dir=data_dir,
                                    limit=config.max_test_examples,
                                    drop_remainder=tpu)
    # The first test images in memory, for the pictures (and the curves
    # of a run without a validation split): they are few.
    test_data = _first_examples(streaming.eval_stream(
        spec, config.batch_size, data_dir=data_dir,
        limit=min(n for n in (config.eval_subset or _TEST_SUBSET,
                              config.max_test_examples) if n)))
  # --- What the epochs are evaluated on: the validation split, whose most
  # robust epoch is kept; without one, the first test images, for the curves
  # only (nothing is chosen on them).
  if held_out is not None:
    subset = data.ArrayData(held_out.images[:config.eval_subset],
                            held_out.labels[:config.eval_subset])
    report(validation.describe(block, held_out.labels, spec.num_classes))
  else:
    count = config.eval_subset or _TEST_SUBSET
    subset = data.ArrayData(test_data.images[:count],
                            test_data.labels[:count])
  if distribution.kind(strategy) == "multi_worker":
    # Keras shards the validation data by files otherwise, which fails on
    # a split of fewer files than workers.
    test_ds = test_ds.with_options(data.shard_by_data())
  if tpu and len(subset.labels) < config.batch_size:
    raise ValueError(f"on a TPU evaluation batches are full: the "
                     f"{len(subset.labels)} images evaluated each time "
                     "(--validation_split, --eval_subset) must hold at "
                     f"least one batch of {config.batch_size}")
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"--batch_size={config.batch_size} exceeds the "
                     f"{num_train} training examples: no full batch per "
                     "epoch")
  subset_ds = data.eval_dataset(subset, config.batch_size, drop_remainder=tpu)
  # Keras' per-epoch val_loss and val_accuracy: on the validation split when
  # there is one.
  epoch_val_ds = (data.eval_dataset(held_out, config.batch_size,
                                    drop_remainder=tpu)
                  if held_out is not None else test_ds)
  if held_out is not None and distribution.kind(strategy) == "multi_worker":
    epoch_val_ds = epoch_val_ds.with_options(data.shard_by_data())
  # The evaluated budget: --epsilon unless an overdesigned training budget
  # is evaluated at a smaller one.
  eval_epsilon = config.eval_epsilon or config.epsilon
  eval_step = config.eval_step_size or eval_epsilon / 4
  # The images of the TensorBoard pictures: fixed by the seed.
  chosen = np.sort(np.random.default_rng(config.seed).choice(
      len(test_data.labels), min(config.image_count, len(test_data.labels)),
      replace=False))
  picture_images = test_data.images[chosen].astype(np.float32) / 255.0
  picture_labels = test_data.labels[chosen]
  values["input_used"] = input_mode
  values["validation_used"] = block.as_dict()
  values["dataset_spec"] = {"image_shape": list(spec.image_shape),
                            "num_classes": spec.num_classes,
                            "mean": list(spec.mean), "std": list(spec.std)}
  _check_resolved_settings(state, values, start_epoch)

  # --- Model -----------------------------------------------------------------
  with strategy.scope():
    classifier = build_model(config.model, spec.image_shape, spec.num_classes,
                             mean=spec.mean, std=spec.std)
    natural_classifier = None
    if METHODS[config.method].concurrent:  # ACT's natural model
      natural_classifier = build_model(
          config.act_natural_model or config.model, spec.image_shape,
          spec.num_classes, mean=spec.mean, std=spec.std)
    model = PARTModel(
        classifier, method=config.method, epsilon=config.epsilon,
        epsilon_low=config.epsilon_low, step_size=config.step_size,
        num_steps=config.num_steps, cam=config.cam,
        mask_rule=config.mask_rule, cam_layer=config.cam_layer,
        weight_decay=config.weight_decay, seed=config.seed,
        beta=config.beta, attack=config.attack,
        natural_classifier=natural_classifier, act_alpha=config.act_alpha,
        act_beta=config.act_beta, act_temperature=config.act_temperature,
        consistency_weight=config.consistency_weight,
        consistency_temperature=config.consistency_temperature,
        feature_alignment_weight=config.feature_alignment_weight,
        center_loss_weight=config.center_loss_weight,
        center_lr=config.center_lr, feature_layer=config.feature_layer)
    model.compile(optimizer=_optimizer(config, steps_per_epoch),
                  jit_compile=jit)

  # The backup must load before anything is written (a truncated weights
  # file is an error that leaves the folder as it is).
  restore(model, backup_dir)

  # --- Start or resume: from here on the folder holds this run -------------
  io_utils.atomic_write_json(config_path, values)
  if state.backup_epoch is None or not os.path.exists(
      os.path.join(backup_dir, "state.json")):
    start_backups(backup_dir)
  _drop_log_rows_from(log_path, start_epoch)
  progress["started"] = True

  # --- Callbacks -------------------------------------------------------------
  tensorboard_dir = os.path.join(write_dir, run_folder.TENSORBOARD_DIR)
  callbacks = [
      SyncReplicaCopies(),
      BurnInSwitch(config.burn_in_epochs),
      evaluation.RobustEvaluation(
          subset_ds, config.eval_every, eval_epsilon, eval_step,
          config.eval_num_steps, seed=config.seed, jit_compile=jit,
          best_dir=best_dir if block.size else None),
      ImagePanels(os.path.join(tensorboard_dir, "pictures"),
                  picture_images, picture_labels, config.burn_in_epochs,
                  config.image_every,
                  class_names=pictures.CLASS_NAMES.get(config.dataset),
                  seed=config.seed),
      keras.callbacks.CSVLogger(log_path, append=True),
      keras.callbacks.TensorBoard(tensorboard_dir),
      *([EpochLog(stream=out)] if out is not None else []),
      AtomicBackupAndRestore(backup_dir),  # last: an epoch is backed up
  ]                                        # only once fully logged

  # --- Fit -------------------------------------------------------------------
  started = time.time()
  if start_epoch >= config.epochs:
    report(f"the run finished its {start_epoch} epochs already: evaluating "
           "it again")
  else:
    if start_epoch:
      report(f"resuming after epoch {start_epoch} of {config.epochs}")
    model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
              initial_epoch=start_epoch, validation_data=epoch_val_ds,
              callbacks=callbacks, shuffle=False, verbose=0)
  train_seconds = time.time() - started

  # --- Final evaluation ------------------------------------------------------
  result = evaluation.robust_accuracy(
      classifier, test_ds, eval_epsilon, eval_step, config.eval_num_steps,
      seed=config.seed, jit_compile=jit, strategy=strategy)

  # --- Export and metrics ----------------------------------------------------
  io_utils.atomic_file(os.path.join(write_dir, "classifier.keras"),
                       classifier.save)
  if natural_classifier is not None:
    io_utils.atomic_file(os.path.join(write_dir, NATURAL_CLASSIFIER_FILE),
                         natural_classifier.save)
  export_dir = os.path.join(write_dir, run_folder.EXPORT_DIR,
                            str(config.epochs))
  names = class_names.class_names(spec, data_dir)
  if config.export:  # TF Serving layout: export/<version>/
    export_classifier(classifier, export_dir, names)
  metrics = {
      "natural_accuracy": float(result["natural_accuracy"]),
      f"pgd{config.eval_num_steps}_accuracy": float(result["pgd_accuracy"]),
      "num_test_examples": result["num_examples"],
      "epsilon": eval_epsilon, "train_epsilon": config.epsilon,
      "eval_step_size": eval_step,
      "method": config.method, "dataset": config.dataset,
      "epochs": config.epochs, "resumed_at_epoch": start_epoch,
      "strategy": distribution.kind(strategy), "num_replicas": replicas,
      "train_seconds_this_session": round(train_seconds, 1),
  }
  if natural_classifier is not None:  # ACT: recorded beside the robust model
    natural_result = evaluation.robust_accuracy(
        natural_classifier, test_ds, eval_epsilon, eval_step,
        config.eval_num_steps, seed=config.seed, jit_compile=jit,
        strategy=strategy)
    metrics["natural_model"] = {
        "model": config.act_natural_model or config.model,
        "natural_accuracy": float(natural_result["natural_accuracy"]),
        f"pgd{config.eval_num_steps}_accuracy":
            float(natural_result["pgd_accuracy"])}
  metrics["validation"] = {
      **block.as_dict(), "evaluated_each_time": len(subset.labels),
      "chooses_best": bool(block.size),
      "note": ("the most robust epoch is chosen on these held-out training "
               "images; the test split reports the final and the chosen "
               "model and chooses nothing") if block.size else (
                   "no validation split (--validation_split=0; or auto, "
                   "which holds out none with --eval_every=0 or when 2% of "
                   "the training images is less than one): no epoch is "
                   "chosen, and the curves' evaluations use the first "
                   f"{len(subset.labels)} test images")}
  if config.export:
    metrics["export"] = os.path.relpath(export_dir, write_dir)
  best = evaluation.read_best(best_dir) if block.size else None
  if best is not None:  # the most robust epoch on the validation split
    with strategy.scope():
      best_classifier = keras.models.clone_model(classifier)
    load_weights(best_classifier, best["weights"], "best-robust weights")
    best_result = evaluation.robust_accuracy(
        best_classifier, test_ds, eval_epsilon, eval_step,
        config.eval_num_steps, seed=config.seed, jit_compile=jit,
        strategy=strategy)
    metrics["best"] = {
        "epoch": best["epoch"],
        "chosen_on": "validation",
        "val_pgd_accuracy": best["val_pgd_accuracy"],
        "natural_accuracy": float(best_result["natural_accuracy"]),
        f"pgd{config.eval_num_steps}_accuracy":
            float(best_result["pgd_accuracy"])}
    io_utils.atomic_file(os.path.join(write_dir, BEST_CLASSIFIER_FILE),
                         best_classifier.save)
    if config.export:
      metrics["best"]["export"] = os.path.relpath(_export_best(
          best_classifier, write_dir, best["epoch"], names), write_dir)
    else:  # no export now: none of an older best epoch may stay beside it
      _prune_export_best(write_dir, best["epoch"])
  io_utils.atomic_write_json(
      os.path.join(write_dir, run_folder.METRICS_FILE), metrics)
  write_hparams(
      os.path.join(tensorboard_dir, "hparams"),
      {**{name: getattr(config, name) for name in (
          "method", "epsilon", "epsilon_low", "mask_rule", "cam", "model",
          "dataset", "burn_in_epochs", "attack", "seed", "act_alpha",
          "act_beta", "act_temperature", "consistency_weight",
          "feature_alignment_weight", "center_loss_weight")},
       "eval_epsilon": eval_epsilon},
      {"natural_accuracy": metrics["natural_accuracy"],
       f"pgd{config.eval_num_steps}_accuracy":
           metrics[f"pgd{config.eval_num_steps}_accuracy"]},
      step=config.epochs)
  report(_results_line(metrics, config.eval_num_steps))
  exports = ""
  if config.export:
    exports = f" and the SavedModel {export_dir}"
    if "best" in metrics:
      exports = (f", the SavedModels {export_dir} (last epoch) and "
                 f"{os.path.join(model_dir, metrics['best']['export'])} "
                 "(most robust epoch)")
  report(f"wrote {os.path.join(model_dir, run_folder.METRICS_FILE)}"
         + exports)
  return metrics


# Test images evaluated each time when there is no validation split.
_TEST_SUBSET = 512


def _validation_block(config, state, start_epoch, num_train):
  """The validation block of this run: a resumed run keeps the block it was
  trained with (with "auto", --eval_every may change on a resume, but the
  training images may not), a new one chooses it from the settings."""
  stored = state.config.get("validation_used") if (
      start_epoch and state.config) else None
  if stored is not None and stored.get("num_train") == num_train:
    return validation.Block(**stored)
  return validation.Block.choose(
      num_train, validation.size_for(config.validation_split, num_train,
                                     selects=config.eval_every > 0),
      config.seed)


def _export_best(classifier, write_dir, epoch, names) -> str:
  """Exports the best-robust classifier to export_best/<epoch>/ (a TF
  Serving model base path of its own) and then removes the exports of
  epochs that are no longer the best."""
  target = export_classifier(
      classifier, os.path.join(write_dir, EXPORT_BEST_DIR, str(epoch)), names)
  _prune_export_best(write_dir, epoch)
  return target


def _prune_export_best(write_dir, epoch):
  """Removes the exports in export_best/ of epochs other than `epoch`."""
  base = os.path.join(write_dir, EXPORT_BEST_DIR)
  if os.path.isdir(base):
    for name in os.listdir(base):
      if name.isdigit() and name != str(epoch):
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _check_resolved_settings(state, values, start_epoch):
  """A resumed run must read its data as the run it resumes did: the same
  input mode (their orders differ) and the same dataset statistics (built
  into the classifier). Runs of older versions used memory input."""
  if not start_epoch or state.config is None:
    return
  before = state.config.get("input_used", "memory")
  if before != values["input_used"]:
    raise run_folder.RunFolderError(
        f"{state.path} was trained with {before} input; this start would "
        f"use {values['input_used']} input (pass --input={before})")
  held = state.config.get("validation_used")
  if held is not None and held != values["validation_used"]:
    raise run_folder.RunFolderError(
        f"{state.path} was trained holding out the training images "
        f"{held}; this start would hold out {values['validation_used']} "
        "(pass the run's --validation_split, --seed and "
        "--max_train_examples)")
  spec = state.config.get("dataset_spec")
  if spec is not None and json.loads(json.dumps(
      values["dataset_spec"])) != spec:
    raise run_folder.RunFolderError(
        f"{state.path} was trained on data with image shape, classes, mean "
        f"and std {spec}; these data give {values['dataset_spec']} (pass "
        "the run's --image_size, --num_classes, --mean and --std)")


def _check_data_service(address, timeout):
  """Raises ValueError unless a tf.data service dispatcher answers at
  `address` within `timeout` seconds (the service waits for one for ever,
  without a word)."""
  try:
    addresses.split(address)
  except ValueError:
    raise ValueError(f"--data_service={address} is not an address like "
                     "grpc://host:5000") from None
  if not addresses.wait_until_answers(address, timeout):
    raise ValueError(f"--data_service={address}: no tf.data service "
                     f"dispatcher answers there within {timeout:g} s "
                     "(--cluster_timeout); start it first")


def _with_data_service(dataset, address):
  """`dataset`, produced by the tf.data service at `address` if given.

  Dynamic sharding: the service workers split the passes between them, so
  each example is still read once per pass; with one service worker the
  order is the local pipeline's.
  """
  if not address:
    return dataset
  return dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
      service=address))


def _first_examples(dataset, what="the test split") -> "data.ArrayData":
  """The examples of a small batched dataset of images in [0, 1], in memory
  as uint8 arrays."""
  images, labels = [], []
  for x, y in dataset.as_numpy_iterator():
    images.append(np.round(x * 255).astype(np.uint8))
    labels.append(y.astype(np.int32))
  if not labels:
    raise ValueError(f"{what} has no examples")
  return data.ArrayData(np.concatenate(images), np.concatenate(labels))


def _count(n, what):
  return f"{n} {what}" + ("" if n == 1 else "s")


def _settings_line(config, model_dir, strategy) -> str:
  method = config.method
  if METHODS[config.method].reweighted:
    method += (f" (epsilon {config.epsilon:.4g}, epsilon_low "
               f"{config.epsilon_low:.4g}, {config.cam} CAM, {config.mask_rule}"
               f" mask, {_count(config.burn_in_epochs, 'burn-in epoch')})")
  else:
    method += f" (epsilon {config.epsilon:.4g})"
  if METHODS[config.method].concurrent:
    method += (f", natural model {config.act_natural_model or config.model}"
               f" (alpha {config.act_alpha:g}, beta {config.act_beta:g}, "
               f"temperature {config.act_temperature:g})")
  extras = [f"{name} {getattr(config, name + '_weight'):g}"
            for name in ("consistency", "feature_alignment", "center_loss")
            if getattr(config, name + "_weight")]
  if extras:
    method += " + " + ", ".join(extras)
  return (f"training {config.model} on {config.dataset} with {method}, "
          f"PGD-{config.num_steps} step {config.step_size:.4g}, "
          f"{_count(config.epochs, 'epoch')} of batch {config.batch_size}, "
          f"{config.optimizer} lr {config.learning_rate:g}, seed "
          f"{config.seed}, {_where(strategy)}, in {model_dir}")


def _where(strategy) -> str:
  replicas = strategy.num_replicas_in_sync
  name = distribution.kind(strategy)
  if name == "one_device":
    return "on one device"
  if name == "multi_worker":
    return (f"on {_count(distribution.cluster().num_workers, 'worker')} "
            f"({_count(replicas, 'replica')})")
  return f"{name} over {_count(replicas, 'replica')}"


def _results_line(metrics, steps) -> str:
  line = (f"test: natural accuracy {metrics['natural_accuracy']:.4f}, "
          f"PGD-{steps} accuracy {metrics[f'pgd{steps}_accuracy']:.4f} "
          f"({metrics['num_test_examples']} examples, epsilon "
          f"{metrics['epsilon']:.4g})")
  best = metrics.get("best")
  if best:
    line += (f"; most robust epoch {best['epoch']}: natural "
             f"{best['natural_accuracy']:.4f}, PGD-{steps} "
             f"{best[f'pgd{steps}_accuracy']:.4f}")
  natural = metrics.get("natural_model")
  if natural:
    line += (f"; natural model: natural {natural['natural_accuracy']:.4f}, "
             f"PGD-{steps} {natural[f'pgd{steps}_accuracy']:.4f}")
  return line
