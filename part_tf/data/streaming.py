"""Streaming input: TFDS shards read, decoded and augmented inside tf.data,
for datasets that do not fit in memory (`--input=stream`).

Each input pipeline (one per worker under `distribute_datasets_from_function`)
reads its own files through `tfds.ReadConfig(input_context=...)`. Memory
stays bounded by the shuffle buffer, whatever the dataset's size.

Order: the file order and the shuffle of pass `k` of a run are pure
functions of `(seed, start_epoch)` and `k`, so a run is reproducible, and a
run resumed at epoch `e` reads a reproducible order of its own, seeded by
`(seed, e)` (not the order the uninterrupted run would have read: TFDS'
file shuffle and tf.data's shuffle buffer cannot skip ahead to an epoch).
Augmentation is the in-memory pipeline's (`datasets._augment`), seeded by
`(seed, start_epoch, step)`.
"""

import numpy as np
import tensorflow as tf

from part_tf.data import tfds_any
from part_tf.data.datasets import augmented_views
from part_tf.data.preparation import is_readable
from part_tf.data.preparation import no_missing_variant_warnings
from part_tf.data.specs import DatasetSpec

INPUT_MODES = ("auto", "memory", "stream")
# Decoded examples held by the shuffle buffer of a streamed pipeline.
SHUFFLE_BUFFER = 10_000


def decoded_gigabytes(spec: DatasetSpec, num_examples: int) -> float:
  """Memory the decoded uint8 images of `num_examples` take, in GB."""
  return float(np.prod(spec.image_shape)) * num_examples / 1e9


def num_examples(spec: DatasetSpec, split: str, data_dir=None,
                 limit=None) -> int:
  """Examples of a TFDS split (capped at `limit`), from its metadata."""
  builder = tfds_any.builder(spec, data_dir)
  try:
    count = builder.info.splits[split].num_examples
  except KeyError:  # sizes not recorded (e.g. tfds.testing.mock_data)
    count = int(builder.as_dataset(split=_split(split, limit)).reduce(
        0, lambda n, _: n + 1))
  return min(count, limit) if limit else count


def choose(mode: str, spec: DatasetSpec, data_dir=None, limit=None,
           budget_gb: float = 4.0) -> str:
  """"memory" or "stream" for `--input=mode`.

  Raises:
    ValueError: `stream` of a dataset that has no TFDS shards.
  """
  if mode not in INPUT_MODES:
    raise ValueError(f"unknown input mode {mode!r}; valid: "
                     f"{', '.join(INPUT_MODES)}")
  if spec.tfds_name is None:
    if mode == "stream":
      raise ValueError(f"--input=stream reads TFDS shards; {spec.name} has "
                       "none (its loader gives arrays in memory)")
    return "memory"
  if mode != "auto":
    return mode
  with no_missing_variant_warnings():
    prepared = is_readable(tfds_any.builder(spec, data_dir), spec.train_split)
  if not prepared:
    # Loading prepares it (downloads or --manual_dir), with its own errors.
    return "memory"
  size = decoded_gigabytes(
      spec, num_examples(spec, spec.train_split, data_dir, limit))
  return "stream" if size > budget_gb else "memory"


def _seed(*values) -> int:
  return int(np.random.SeedSequence(list(values)).generate_state(1)[0]
             % (2 ** 31))


def _split(split: str, limit) -> str:
  return f"{split}[:{limit}]" if limit else split


def train_stream(spec: DatasetSpec, batch_size: int, seed: int,
                 start_epoch: int = 0, augment: bool = True, data_dir=None,
                 limit=None, input_context=None,
                 shuffle_buffer: int = SHUFFLE_BUFFER,
                 views: int = 1, split: str | None = None,
                 view_augmentation: str = "crop_flip") -> tf.data.Dataset:
  """Endless training batches read from the TFDS shards of `spec`.

  Each pass over the (sharded) split is shuffled anew and cut into full
  batches; fit it with `steps_per_epoch = examples // global batch`.

  Args:
    spec: a dataset with TFDS shards.
    batch_size: batch size of this pipeline (the per-worker share of the
      global batch under `distribute_datasets_from_function`).
    seed, start_epoch: seed the file order, shuffle and augmentation.
    augment: random crop and flip as `spec` says.
    data_dir: TFDS data folder.
    limit: read only the first `limit` examples of the split.
    input_context: `tf.distribute.InputContext` of this pipeline, or None.
    shuffle_buffer: examples in the shuffle buffer (bounds the memory).
    views: augmented views of each image (2 for consistency
      regularisation: x is then [batch_size, 2, H, W, C]).
    split: the TFDS split to read instead of the training split (capped at
      `limit`), e.g. the training images outside the validation block
      (`part_tf.data.validation.Block.tfds_splits`).
    view_augmentation: "crop_flip" or "randaugment" (see
      `part_tf.data.train_dataset`).

  Returns:
    Dataset of `(x float32 [batch_size, H, W, C] in [0, 1], y int32)`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  run_seed = _seed(seed, start_epoch)
  builder = tfds_any.builder(spec, data_dir)
  pipelines = input_context.num_input_pipelines if input_context else 1
  # TFDS shards by files; a split with fewer files than input pipelines is
  # shared out by example instead (each pipeline keeps every n-th one). A
  # split of slices (the training images around the validation block) cuts
  # up to two files into pieces of any size: it is shared out by file only
  # when the split has at least 4 files per pipeline, so that those pieces
  # change the pipelines' shares little.
  files = _num_files(builder, spec.train_split)
  by_file = pipelines == 1 or (
      files >= pipelines if split is None else files >= 4 * pipelines)
  read_config = tfds.ReadConfig(
      input_context=input_context if by_file else None,
      shuffle_seed=run_seed, shuffle_reshuffle_each_iteration=True,
      try_autocache=False)
  ds = builder.as_dataset(split=split or _split(spec.train_split, limit),
                          shuffle_files=True, read_config=read_config)
  if not by_file:
    ds = ds.shard(pipelines, input_context.input_pipeline_id)
  base = tf.constant([seed, start_epoch], tf.int64)

  def make_batch(step, batch):
    x, y = batch
    if augment:
      x = augmented_views(x, spec, tf.random.experimental.stateless_fold_in(
          base, step), views, view_augmentation)
    elif views > 1:
      x = tf.stack([x] * views, axis=1)
    return tf.cast(x, tf.float32) / 255.0, y

  return (ds.map(tfds_any.to_example(spec),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .shuffle(shuffle_buffer, seed=run_seed,
                   reshuffle_each_iteration=True)
          .batch(batch_size, drop_remainder=True)
          .repeat()
          .enumerate()
          .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
               deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def _num_files(builder, split) -> int:
  try:
    return builder.info.splits[split].num_shards
  except KeyError:  # sizes not recorded (e.g. tfds.testing.mock_data)
    return 1


def eval_stream(spec: DatasetSpec, batch_size: int, split=None,
                data_dir=None, limit=None,
                drop_remainder: bool = False) -> tf.data.Dataset:
  """The test split in file order, batched, images in [0, 1]."""
  ds = tfds_any.builder(spec, data_dir).as_dataset(
      split=_split(split or spec.test_split, limit), shuffle_files=False)
  return (ds.map(tfds_any.to_example(spec),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size, drop_remainder=drop_remainder)
          .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
          .prefetch(tf.data.AUTOTUNE))
