"""The inputs of a training run: the training stream, the held-out images
that choose the best epoch, the test split, and the pictures' images.

`make_inputs` reads the data the way `config` asks (in memory, or streamed
from TFDS shards; optionally through a tf.data service), holds out the
validation block (`part_tf.data.validation`; a resumed run holds out the
block it was trained with) and batches everything.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from part_tf import data
from part_tf import distribution
from part_tf.data import streaming
from part_tf.data import validation

# Test images evaluated each time when there is no validation split.
TEST_SUBSET = 512


@dataclasses.dataclass
class Inputs:
  """What a run trains and is evaluated on.

  Attributes:
    spec: the dataset's spec.
    mode: "memory" or "stream".
    train: the training stream (per-replica datasets when streamed).
    steps_per_epoch: full batches per epoch.
    test: the test split, batched for evaluation.
    block: the validation block (`validation.Block`; size 0: none).
    subset: the images evaluated each epoch that is evaluated (the block,
      or the first test images when there is none), batched.
    subset_size: how many images `subset` holds.
    epoch_validation: Keras' per-epoch validation data.
    picture_images, picture_labels: the TensorBoard pictures' test images.
    held_out_labels: labels of the validation block (for its summary).
  """
  spec: object
  mode: str
  train: object
  steps_per_epoch: int
  test: object
  block: validation.Block
  subset: object
  subset_size: int
  epoch_validation: object
  picture_images: np.ndarray
  picture_labels: np.ndarray
  held_out_labels: np.ndarray | None


def make_inputs(config, strategy, start_epoch: int, stored_block=None
                ) -> Inputs:
  """The inputs of the run `config` (a `TrainConfig`) under `strategy`.

  Args:
    config: the run's settings.
    strategy: its `tf.distribute` strategy.
    start_epoch: the epoch it starts (or resumes) at.
    stored_block: the validation block a resumed run was trained with
      (`config.json`'s "validation_used"), or None.

  Raises:
    ValueError: settings the data cannot serve (one line).
  """
  d, multi_worker = config.data, distribution.kind(strategy) == "multi_worker"
  tpu = distribution.kind(strategy) == "tpu"
  data_dir = d.data_dir and _expand(d.data_dir)
  spec = data.resolve_spec(d.dataset, data_dir, d.image_size, d.num_classes,
                           d.mean, d.std, d.manual_dir)
  for regulariser in config.regularisers:
    regulariser.check_run(config, spec)
  if d.input != "memory":  # the size decides; loading prepares too
    data.prepare(spec, data_dir, d.manual_dir)
  mode = streaming.choose(d.input, spec, data_dir, d.max_train_examples,
                          d.input_memory_budget)
  if d.data_service and mode == "memory" and multi_worker:
    raise ValueError("--data_service with several workers needs "
                     "--input=stream (each worker then serves its own files)")
  read = _in_memory if mode == "memory" else _streamed
  train, test, held_out, block, num_train, test_data, spec = read(
      config, spec, data_dir, strategy, start_epoch, stored_block)
  steps_per_epoch = num_train // d.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"--batch_size={d.batch_size} exceeds the "
                     f"{num_train} training examples: no full batch per "
                     "epoch")
  return _evaluated(config, spec, mode, train, steps_per_epoch, test,
                    held_out, block, test_data, multi_worker, tpu)


def _expand(path):
  import os  # pylint: disable=g-import-not-at-top
  return os.path.expanduser(path)


def _block(config, stored_block, num_train, num_classes, start_epoch):
  """The validation block: a resumed run keeps the block it was trained
  with (with "auto", eval_every may change on a resume, but the training
  images may not), a new one chooses it from the settings."""
  if start_epoch and stored_block is not None and (
      stored_block.get("num_train") == num_train):
    return validation.Block(**stored_block)
  e = config.evaluation
  return validation.Block.choose(
      num_train, validation.size_for(
          e.validation_split, num_train, selects=e.eval_every > 0,
          num_classes=num_classes, allow_small=e.allow_small_validation),
      config.run.seed)


def _in_memory(config, spec, data_dir, strategy, start_epoch, stored_block):
  """The data decoded into memory."""
  d, tpu = config.data, distribution.kind(strategy) == "tpu"
  train_data, test_data, spec = data.load(
      d.dataset, data_dir=data_dir, manual_dir=d.manual_dir,
      max_train=d.max_train_examples, max_test=d.max_test_examples,
      spec=spec)
  block = _block(config, stored_block, len(train_data.labels),
                 spec.num_classes, start_epoch)
  held_out = None
  if block.size:
    train_data, held_out = block.split_arrays(train_data)
  if d.data_service and train_data.images.nbytes > 1e9:
    raise ValueError("--data_service sends in-memory data inside the "
                     "dataset's graph, which must stay under 2 GB: use "
                     "--input=stream")
  train = _with_data_service(data.train_dataset(
      train_data, spec, d.batch_size, seed=config.run.seed,
      start_epoch=start_epoch, epochs=config.optimizer.epochs,
      augment=d.augment, views=config.views,
      view_augmentation=config.view_augmentation), d.data_service)
  if distribution.kind(strategy) == "multi_worker":
    # Each worker takes its replicas' shares of every global batch.
    train = train.with_options(data.shard_by_data())
  # TPUs need static shapes: evaluation drops a partial last batch there.
  test = data.eval_dataset(test_data, config.evaluation.eval_batch_size,
                           drop_remainder=tpu)
  return (train, test, held_out, block, len(train_data.labels), test_data,
          spec)


def _streamed(config, spec, data_dir, strategy, start_epoch, stored_block):
  """The data read from TFDS shards inside tf.data."""
  d, tpu = config.data, distribution.kind(strategy) == "tpu"
  available = streaming.num_examples(spec, spec.train_split, data_dir,
                                     d.max_train_examples)
  block = _block(config, stored_block, available, spec.num_classes,
                 start_epoch)
  train_split, held_out = None, None
  if block.size:  # the same images as in memory, read as split slices
    train_split, validation_split = block.tfds_splits(spec.train_split)
    held_out = _first_examples(streaming.eval_stream(
        spec, d.batch_size, split=validation_split, data_dir=data_dir),
                               "the validation split")

  def pipeline(context):
    return _with_data_service(streaming.train_stream(
        spec, context.get_per_replica_batch_size(d.batch_size),
        seed=config.run.seed, start_epoch=start_epoch, augment=d.augment,
        data_dir=data_dir, limit=d.max_train_examples, input_context=context,
        views=config.views, split=train_split,
        view_augmentation=config.view_augmentation), d.data_service)
  train = strategy.distribute_datasets_from_function(pipeline)
  test = streaming.eval_stream(spec, config.evaluation.eval_batch_size,
                               data_dir=data_dir, limit=d.max_test_examples,
                               drop_remainder=tpu)
  # The first test images in memory, for the pictures (and the curves of a
  # run without a validation split): they are few.
  test_data = _first_examples(streaming.eval_stream(
      spec, d.batch_size, data_dir=data_dir,
      limit=min(n for n in (config.evaluation.eval_subset or TEST_SUBSET,
                            d.max_test_examples) if n)))
  return (train, test, held_out, block, available - block.size, test_data,
          spec)


def _evaluated(config, spec, mode, train, steps_per_epoch, test, held_out,
               block, test_data, multi_worker, tpu) -> Inputs:
  """What the epochs are evaluated on: the validation split, whose most
  robust epoch is kept; without one, the first test images, for the curves
  only (nothing is chosen on them)."""
  e, batch = config.evaluation, config.evaluation.eval_batch_size
  if held_out is not None:
    subset = data.ArrayData(held_out.images[:e.eval_subset],
                            held_out.labels[:e.eval_subset])
  else:
    count = e.eval_subset or TEST_SUBSET
    subset = data.ArrayData(test_data.images[:count],
                            test_data.labels[:count])
  if multi_worker:
    # Keras shards the validation data by files otherwise, which fails on
    # a split of fewer files than workers.
    test = test.with_options(data.shard_by_data())
  if tpu and len(subset.labels) < batch:
    raise ValueError(f"on a TPU evaluation batches are full: the "
                     f"{len(subset.labels)} images evaluated each time "
                     "(--validation_split, --eval_subset) must hold at "
                     f"least one batch of {batch}")
  # Keras' per-epoch val_loss and val_accuracy: on the validation split when
  # there is one.
  epoch_validation = (data.eval_dataset(held_out, batch, drop_remainder=tpu)
                      if held_out is not None else test)
  if held_out is not None and multi_worker:
    epoch_validation = epoch_validation.with_options(data.shard_by_data())
  # The images of the TensorBoard pictures: fixed by the seed.
  chosen = np.sort(np.random.default_rng(config.run.seed).choice(
      len(test_data.labels),
      min(config.run.image_count, len(test_data.labels)), replace=False))
  return Inputs(
      spec=spec, mode=mode, train=train, steps_per_epoch=steps_per_epoch,
      test=test, block=block,
      subset=data.eval_dataset(subset, batch, drop_remainder=tpu),
      subset_size=len(subset.labels), epoch_validation=epoch_validation,
      picture_images=test_data.images[chosen].astype(np.float32) / 255.0,
      picture_labels=test_data.labels[chosen],
      held_out_labels=None if held_out is None else held_out.labels)


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
