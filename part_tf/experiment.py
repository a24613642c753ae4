"""A complete training run, top to bottom, in named stages:

  train(config)
    _start      what the run folder holds; resume or start; the first lines
    make_inputs the training stream, the held-out images, the test split
    _model      the classifier(s) and the compiled PARTModel
    _callbacks  evaluation, pictures, logs, backups
    _fit        model.fit, from the epoch the run resumes at
    _report     the final (and best) model's metrics, saved and exported

`scripts/train.py` turns its flags into a `TrainConfig` (`part_tf.config`)
and calls `train`. Everything a run writes goes through its `RunFolder`
(`part_tf.run_folder`, which lists the folder's layout): a run holds the
folder's lock, checks its state first, and a start that fails before
training begins leaves the folder as it found it.
"""

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from part_tf import addresses
from part_tf import distribution
from part_tf import evaluation
from part_tf import multi_worker
from part_tf import pictures
from part_tf import run_folder
from part_tf import run_settings
from part_tf.config import TrainConfig
from part_tf.data import class_names
from part_tf.data import validation
from part_tf.models import build_model
from part_tf.paths import check_local_path
from part_tf.training import learning_rate
from part_tf.training import progress as progress_lines
from part_tf.training import PARTModel
from part_tf.training import SyncReplicaCopies
from part_tf.training.checkpointing import AtomicBackupAndRestore
from part_tf.training.checkpointing import load_weights
from part_tf.training.checkpointing import restore
from part_tf.training.csv_log import CSVLog
from part_tf.training.image_summaries import ImagePanels
from part_tf.training.image_summaries import write_hparams
from part_tf.training.inputs import make_inputs
from part_tf.training.progress import EpochLog
from part_tf.training.robust_evaluation import RobustEvaluation

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig, out=None) -> dict:
  """Runs (or resumes) training and returns the final metrics.

  Creates the `tf.distribute` strategy first (`part_tf.distribution`), so
  call it before TensorFlow has run anything else when the run spans several
  workers or a TPU. The chief (the only process of a one-process run) holds
  the run folder's lock throughout; other workers of a multi-worker job take
  no lock and write nothing to the folder: they work on a private copy of
  its backups in a temporary folder, removed at the end.

  Args:
    config: the run's settings (`config.run.model_dir` is the folder).
    out: text stream for the settings, one line per epoch (and a progress
      line during long epochs if it is a terminal) and the results, e.g.
      `sys.stdout`; None prints nothing. Only the chief prints.

  A multi-worker job checks that it can start before the folder is touched:
  every worker's TF_CONFIG port is free, all of them join within
  `config.run.cluster_timeout` seconds, and they run with the same settings
  (all but `TrainConfig.per_worker_settings`); so does a run with a tf.data
  service, whose dispatcher must answer within that time.

  Raises:
    ValueError: bad settings, data or run folder (one-line messages;
      `run_folder.RunFolderError` for the folder), or a job that cannot
      start (see above).
    OSError: the folder cannot be written.
  """
  for name in ("model_dir", "data_dir", "manual_dir"):
    section = config.run if name == "model_dir" else config.data
    check_local_path(name, getattr(section, name))
  if config.run.model_dir is None:
    raise ValueError("model_dir is required: the run folder")
  model_dir = os.path.abspath(os.path.expanduser(config.run.model_dir))
  run = config.run
  if config.data.data_service:
    _check_data_service(config.data.data_service, run.cluster_timeout)
  distribution.split_cpu(run.cpu_devices)
  strategy = distribution.create(run.strategy, run.tpu, run.cluster_timeout)
  worker = distribution.cluster()
  if distribution.kind(strategy) == "multi_worker":
    multi_worker.check_same_everywhere(
        worker, {name: value for name, value in
                 run_settings.settings(config).items()
                 if name not in config.per_worker_settings()},
        run.cluster_timeout)
  if distribution.kind(strategy) != "multi_worker" or worker.is_chief:
    with run_folder.locked(model_dir) as created:
      return _as_chief(config, strategy, run_folder.RunFolder(model_dir),
                       created, out)
  return _as_worker(config, strategy, model_dir, worker)


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


def _as_chief(config, strategy, folder, created, out) -> dict:
  """The run inside the folder's lock; a start that fails before its first
  epoch removes what it made (the folder itself if it made it)."""
  made, started = [], [False]
  try:
    with _disk_full_in_one_line(folder.path):
      return _run(config, strategy, folder, _Reporter(out), made, started)
  except BaseException:
    if not started[0]:
      if created:
        shutil.rmtree(folder.path, ignore_errors=True)
      else:
        for path in reversed(made):
          with contextlib.suppress(OSError):
            os.rmdir(path)  # only if still empty
    raise


def _as_worker(config, strategy, model_dir, worker) -> dict:
  """A worker other than the chief: the same steps (they synchronise with
  the chief), on a copy of the folder's backups; nothing of it is kept.
  Named by folder and task, so that a restarted worker removes what a
  killed one left."""
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
    return _run(config, strategy, run_folder.RunFolder(model_dir, work_dir),
                _Reporter(None), [], [False])
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)


def _run(config, strategy, folder, reporter, made, started) -> dict:
  """The stages, in order (see the module doc)."""
  start = _start(config, folder, strategy, reporter, made)
  inputs = make_inputs(config, strategy, start.epoch,
                       (start.state.config or {}).get("validation_used"))
  values = run_settings.resolved(
      start.values, distribution.kind(strategy),
      strategy.num_replicas_in_sync, inputs.mode, inputs.block, inputs.spec)
  _check_resolved_settings(start, values)
  if inputs.block.size:
    reporter(validation.describe(inputs.block, inputs.held_out_labels,
                                 inputs.spec.num_classes))
  model = _model(config, inputs, strategy, start.jit)
  # The backup must load before anything is written (a truncated weights
  # file is an error that leaves the folder as it is).
  restore(model, folder.backup_dir)
  folder.start(values, start.state, start.epoch)
  started[0] = True
  callbacks = _callbacks(config, folder, inputs, model, start.jit, reporter)
  seconds = _fit(config, model, inputs, start.epoch, callbacks, reporter)
  return _report(config, folder, model, inputs, start, seconds, strategy,
                 reporter, callbacks)


@dataclasses.dataclass
class _Start:
  """What `_start` found: the settings to record, the folder's state, the
  epoch the run resumes at, and whether the step compiles with XLA."""
  values: dict
  state: run_folder.RunState
  epoch: int
  jit: bool


def _start(config, folder, strategy, reporter, made) -> _Start:
  """Reads the folder and decides whether (and where) the run may start;
  sets TensorFlow up as the settings ask; prints the first lines."""
  values = run_settings.settings(config)
  state = folder.inspect()
  run_settings.upgrade(state.config)
  epoch = run_folder.check_resume(state, values, config.optimizer.epochs,
                                  config.per_machine_settings())
  made.extend(folder.prepare(config.run.export))
  kind = distribution.kind(strategy)
  reporter(progress_lines.settings_line(
      config, folder.path, progress_lines.where_line(
          kind, strategy.num_replicas_in_sync,
          distribution.cluster().num_workers)))
  note = learning_rate.decay_note(config.optimizer,
                                  config.budget.burn_in_epochs)
  if note:
    reporter(note)
  keras.utils.set_random_seed(config.run.seed)
  if config.run.deterministic:
    tf.config.experimental.enable_op_determinism()
  if config.run.mixed_precision != "none":
    keras.mixed_precision.set_global_policy(config.run.mixed_precision)
  gpus = tf.config.list_physical_devices("GPU")
  jit = {"auto": bool(gpus) or kind == "tpu", "true": True,
         "false": False}[config.run.jit_compile]
  return _Start(values, state, epoch, jit)


def _check_resolved_settings(start, values):
  """A resumed run must read its data as the run it resumes did: the same
  input mode (their orders differ), the same held-out images and the same
  dataset statistics (built into the classifier). Runs of older versions
  used memory input."""
  old, path = start.state.config, start.state.path
  if not start.epoch or old is None:
    return
  before = old.get("input_used", "memory")
  if before != values["input_used"]:
    raise run_folder.RunFolderError(
        f"{path} was trained with {before} input; this start would "
        f"use {values['input_used']} input (pass --input={before})")
  held = old.get("validation_used")
  if held is not None and held != values["validation_used"]:
    raise run_folder.RunFolderError(
        f"{path} was trained holding out the training images "
        f"{held}; this start would hold out {values['validation_used']} "
        "(pass the run's --validation_split, --seed and "
        "--max_train_examples)")
  spec = old.get("dataset_spec")
  if spec is not None and json.loads(json.dumps(
      values["dataset_spec"])) != spec:
    raise run_folder.RunFolderError(
        f"{path} was trained on data with image shape, classes, mean "
        f"and std {spec}; these data give {values['dataset_spec']} (pass "
        "the run's --image_size, --num_classes, --mean and --std)")


def _model(config, inputs, strategy, jit) -> PARTModel:
  """The classifier (and ACT's natural model) in a compiled PARTModel."""
  spec = inputs.spec
  with strategy.scope():
    classifier = build_model(config.model.model, spec.image_shape,
                             spec.num_classes, mean=spec.mean, std=spec.std)
    natural = None
    if config.method.trains_natural_model:
      natural = build_model(
          getattr(config.method, "natural_model", None) or
          config.model.model, spec.image_shape, spec.num_classes,
          mean=spec.mean, std=spec.std)
    budget, attack = config.budget, config.attack
    model = PARTModel(
        classifier, method=config.method, epsilon=budget.epsilon,
        epsilon_low=budget.epsilon_low, burn_in_epochs=budget.burn_in_epochs,
        step_size=attack.step_size, num_steps=attack.num_steps,
        attack=attack.attack, cam=budget.cam, cam_layer=budget.cam_layer,
        mask_rule=budget.mask_rule, regularisers=config.regularisers,
        weight_decay=config.optimizer.weight_decay, seed=config.run.seed,
        natural_classifier=natural)
    model.compile(optimizer=learning_rate.optimizer(
        config.optimizer, budget.burn_in_epochs, inputs.steps_per_epoch),
                  jit_compile=jit)
  return model


def _callbacks(config, folder, inputs, model, jit, reporter) -> list:
  """Evaluation first (it adds to the epoch logs), then the loggers, the
  backup last: an epoch is backed up only once fully logged."""
  epsilon, step = config.evaluation_budget()
  return [
      SyncReplicaCopies(),
      RobustEvaluation(
          inputs.subset, config.evaluation.eval_every, epsilon, step,
          config.evaluation.eval_num_steps, seed=config.run.seed,
          jit_compile=jit,
          best_dir=folder.best_dir if inputs.block.size else None),
      ImagePanels(os.path.join(folder.tensorboard_dir, "pictures"),
                  inputs.picture_images, inputs.picture_labels,
                  config.budget.burn_in_epochs, config.run.image_every,
                  class_names=pictures.CLASS_NAMES.get(config.data.dataset),
                  seed=config.run.seed),
      learning_rate.EpochLearningRate(
          learning_rate.epoch_rule(config.optimizer,
                                   config.budget.burn_in_epochs),
          log=learning_rate.logs_rate(folder.log_path)),
      CSVLog(folder.log_path),
      keras.callbacks.TensorBoard(folder.tensorboard_dir),
      *([EpochLog(stream=reporter.out)] if reporter.out is not None else []),
      AtomicBackupAndRestore(folder.backup_dir),
  ]


def _fit(config, model, inputs, start_epoch, callbacks, reporter) -> float:
  """Trains from `start_epoch` to the last epoch; returns the seconds."""
  epochs = config.optimizer.epochs
  started = time.time()
  if start_epoch >= epochs:
    reporter(f"the run finished its {start_epoch} epochs already: "
             "evaluating it again")
  else:
    if start_epoch:
      reporter(f"resuming after epoch {start_epoch} of {epochs}")
    model.fit(inputs.train, epochs=epochs,
              steps_per_epoch=inputs.steps_per_epoch,
              initial_epoch=start_epoch,
              validation_data=inputs.epoch_validation, callbacks=callbacks,
              shuffle=False, verbose=0)
  return time.time() - started


def _report(config, folder, model, inputs, start, seconds, strategy,
            reporter, callbacks) -> dict:
  """The final model's (and the most robust epoch's) test accuracy, the
  classifiers saved and exported, metrics.json and the hparams entry."""
  measure = _Measure(config, inputs.test, strategy, start.jit, next(
      c for c in callbacks if isinstance(c, RobustEvaluation)))
  metrics = {**_accuracies(measure(model.classifier), config),
             **_run_facts(config, start, seconds, strategy)}
  folder.save_classifier(model.classifier)
  names = class_names.class_names(inputs.spec, config.data.data_dir)
  if config.run.export:  # TF Serving layout: export/<version>/
    metrics["export"] = folder.relative(folder.export(
        model.classifier, config.optimizer.epochs, names))
  if model.natural_classifier is not None:  # ACT: beside the robust model
    folder.save_classifier(model.natural_classifier, "natural")
    metrics["natural_model"] = {
        "model": getattr(config.method, "natural_model", None)
                 or config.model.model,
        **_accuracies(measure(model.natural_classifier), config)}
  metrics["validation"] = _validation_facts(inputs)
  best = folder.read_best() if inputs.block.size else None
  if best is not None:
    metrics["best"] = _best(config, folder, model, best, measure, names,
                            strategy)
  folder.write_metrics(metrics)
  _hparams(config, folder, metrics)
  reporter(progress_lines.results_line(metrics,
                                       config.evaluation.eval_num_steps))
  reporter(_wrote_line(config, folder, metrics))
  return metrics


class _Measure:
  """Natural and PGD accuracy on the test split: `evaluation`'s loop, as
  `evaluate.py --attacks=pgd` measures it (same seeds and batches). The
  trained classifier is measured with the in-training evaluation's
  compiled graph (`robust_evaluation`: the same settings), when it has the
  model (it has not when a finished run is evaluated again)."""

  def __init__(self, config, test, strategy, jit, robust_evaluation):
    self.epsilon, self.step = config.evaluation_budget()
    self.steps, self.seed = config.evaluation.eval_num_steps, config.run.seed
    self.test, self.strategy, self.jit = test, strategy, jit
    self.shared = robust_evaluation

  def __call__(self, classifier) -> dict:
    model = self.shared.model
    if model is not None and model.classifier is classifier:
      return evaluation.pgd_accuracies(self.shared.evaluator()(self.test))
    return evaluation.robust_accuracy(  # with replica 0's statistics
        classifier, self.test, self.epsilon, self.step, self.steps,
        seed=self.seed, strategy=self.strategy, jit_compile=self.jit)


def _accuracies(result, config) -> dict:
  steps = config.evaluation.eval_num_steps
  return {"natural_accuracy": float(result["natural_accuracy"]),
          f"pgd{steps}_accuracy": float(result["pgd_accuracy"]),
          "num_test_examples": result["num_examples"]}


def _run_facts(config, start, seconds, strategy) -> dict:
  epsilon, step = config.evaluation_budget()
  return {"epsilon": epsilon, "train_epsilon": config.budget.epsilon,
          "eval_step_size": step, "method": config.method_name,
          "dataset": config.data.dataset, "epochs": config.optimizer.epochs,
          "resumed_at_epoch": start.epoch,
          "strategy": distribution.kind(strategy),
          "num_replicas": strategy.num_replicas_in_sync,
          "eval_batch_size": config.evaluation.eval_batch_size,
          "train_seconds_this_session": round(seconds, 1)}


def _validation_facts(inputs) -> dict:
  block = inputs.block
  return {
      **block.as_dict(), "evaluated_each_time": inputs.subset_size,
      "chooses_best": bool(block.size),
      "note": ("the most robust epoch is chosen on these held-out training "
               "images; the test split reports the final and the chosen "
               "model and chooses nothing") if block.size else (
                   "no validation split (--validation_split=0; or auto, "
                   "which holds out none with --eval_every=0 or when the "
                   "training images cannot spare 100): no epoch is chosen, "
                   "and the curves' evaluations use the first "
                   f"{inputs.subset_size} test images")}


def _best(config, folder, model, best, measure, names, strategy) -> dict:
  """The most robust epoch on the validation split: measured on the test
  split, saved and exported beside the final model."""
  with strategy.scope():
    classifier = keras.models.clone_model(model.classifier)
  load_weights(classifier, best["weights"], "best-robust weights")
  result = {"epoch": best["epoch"], "chosen_on": "validation",
            "val_pgd_accuracy": best["val_pgd_accuracy"],
            **_accuracies(measure(classifier), config)}
  del result["num_test_examples"]
  folder.save_classifier(classifier, "best")
  if config.run.export:
    result["export"] = folder.relative(folder.export(
        classifier, best["epoch"], names, best=True))
  else:  # no export now: none of an older best epoch may stay beside it
    folder.prune_export_best(best["epoch"])
  return result


def _hparams(config, folder, metrics):
  """The run's TensorBoard hparams entry: its settings and results."""
  steps = config.evaluation.eval_num_steps
  values = config.to_flat()
  chosen = {name: values[name] for name in (
      "method", "epsilon", "epsilon_low", "mask_rule", "cam", "model",
      "dataset", "burn_in_epochs", "attack", "seed")}
  chosen.update({k: v for k, v in values.items()
                 if k.endswith("_weight") or k.startswith("act_")
                 and isinstance(v, (int, float))})
  chosen["eval_epsilon"] = metrics["epsilon"]
  write_hparams(os.path.join(folder.tensorboard_dir, "hparams"), chosen,
                {"natural_accuracy": metrics["natural_accuracy"],
                 f"pgd{steps}_accuracy": metrics[f"pgd{steps}_accuracy"]},
                step=config.optimizer.epochs)


def _wrote_line(config, folder, metrics) -> str:
  line = f"wrote {os.path.join(folder.path, run_folder.METRICS_FILE)}"
  if not config.run.export:
    return line
  export = os.path.join(folder.path, metrics["export"])
  if "best" in metrics:
    return (f"{line}, the SavedModels {export} (last epoch) and "
            f"{os.path.join(folder.path, metrics['best']['export'])} "
            "(most robust epoch)")
  return f"{line} and the SavedModel {export}"


class _Reporter:
  """Prints a run's lines to `out` (None: nothing)."""

  def __init__(self, out):
    self.out = out

  def __call__(self, line: str) -> None:
    if self.out is not None:
      self.out.write(line + "\n")
      self.out.flush()


@contextlib.contextmanager
def _disk_full_in_one_line(model_dir):
  """A full disk, wherever a write hits it (our files, Keras' archives,
  TensorFlow's SavedModel and event writers), becomes one RunFolderError
  naming the file and the last complete backup (the one a resume starts
  from)."""
  try:
    yield
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    raise run_folder.RunFolderError(run_folder.disk_full_line(
        model_dir, e.filename)) from None
  except tf.errors.OpError as e:
    if "No space left on device" not in (e.message or ""):
      raise
    match = re.search(r"(/[^\s,;:'\"]+)", e.message)
    raise run_folder.RunFolderError(run_folder.disk_full_line(
        model_dir, match.group(1) if match else None)) from None
