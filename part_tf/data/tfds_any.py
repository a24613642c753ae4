"""`--dataset=tfds:NAME`: any TFDS image classification dataset by name.

The spec (image shape, classes, mean and std) is read from the dataset's
`DatasetInfo` and, for the statistics, measured on its training images,
unless given. Images are decoded by TFDS and, with `image_size`, centre
cropped to a square and resized (bilinear: it compiles under XLA).

Example:
  spec = spec_for("tfds:imagenette/160px", image_size=128)
"""

import dataclasses

import numpy as np
import tensorflow as tf

from part_tf.data import preparation
from part_tf.data.specs import DatasetSpec

PREFIX = "tfds:"
# Training images measured for a mean and std that are not given.
STATS_EXAMPLES = 10_000


def is_tfds_name(name: str) -> bool:
  return name.startswith(PREFIX) and len(name) > len(PREFIX)


def _keys(info):
  """(image feature, label feature) names of a TFDS dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if info.supervised_keys and len(info.supervised_keys) == 2:
    image, label = info.supervised_keys
    if isinstance(image, str) and isinstance(label, str):
      return image, label
  features = info.features
  images = [k for k, f in features.items()
            if isinstance(f, tfds.features.Image)]
  labels = [k for k, f in features.items()
            if isinstance(f, tfds.features.ClassLabel)]
  if len(images) != 1 or len(labels) != 1:
    raise ValueError(f"TFDS dataset {info.name!r} is not an image "
                     "classification dataset with one image and one class "
                     f"label feature (it has {', '.join(features.keys())})")
  return images[0], labels[0]


def builder(spec_or_name, data_dir=None):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = getattr(spec_or_name, "tfds_name", spec_or_name)
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise ValueError(f"no TFDS dataset named {name!r} is registered or "
                     f"prepared in {data_dir or 'the default data_dir'}"
                     ) from None


def to_example(spec: DatasetSpec):
  """A map from a TFDS example dict to `(uint8 image of spec.image_shape,
  int32 label)`."""
  height, width, channels = spec.image_shape

  def convert(example):
    image = example[spec.image_key]
    if spec.resize:
      shape = tf.shape(image)
      side = tf.minimum(shape[0], shape[1])
      image = tf.image.crop_to_bounding_box(
          image, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
      image = tf.image.resize(image, [height, width], method="bilinear",
                              antialias=True)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    if channels == 3 and image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    image = tf.ensure_shape(image, spec.image_shape)
    return image, tf.cast(example[spec.label_key], tf.int32)
  return convert


def spec_for(name: str, data_dir=None, image_size=None, num_classes=None,
             mean=None, std=None, manual_dir=None) -> DatasetSpec:
  """The `DatasetSpec` of `tfds:NAME`.

  Raises:
    ValueError: not an image classification dataset, images of several
      sizes without `image_size`, statistics of the wrong length.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_name = name[len(PREFIX):] if name.startswith(PREFIX) else name
  info = builder(tfds_name, data_dir).info
  image_key, label_key = _keys(info)
  shape = tuple(info.features[image_key].shape)
  channels = shape[-1] or 3
  if image_size is None:
    if None in shape[:2]:
      raise ValueError(f"{name}: its images differ in size; pass "
                       "--image_size to resize them")
    image_shape = (shape[0], shape[1], channels)
  else:
    image_shape = (image_size, image_size, channels)
  label = info.features[label_key]
  if num_classes is None and not isinstance(
      label, tfds.features.ClassLabel):
    raise ValueError(f"{name}: its label {label_key!r} does not say how many "
                     "classes there are; pass --num_classes")
  classes = num_classes or label.num_classes
  splits = list(info.splits.keys())
  test_split = next((s for s in ("test", "validation") if s in splits),
                    "test")
  spec = DatasetSpec(
      name=name, tfds_name=tfds_name, image_shape=image_shape,
      num_classes=int(classes), mean=(0.0,) * channels,
      std=(1.0,) * channels, crop_padding=max(image_shape[0] // 8, 1),
      flip=True, train_split="train", test_split=test_split,
      image_key=image_key, label_key=label_key,
      resize=image_size is not None)
  if mean is None or std is None:
    # Downloads and prepares the data if needed (errors say how otherwise).
    preparation.prepare(spec, data_dir, manual_dir)
    measured_mean, measured_std = _statistics(spec, data_dir)
    mean = mean or measured_mean
    std = std or measured_std
  for what, values in (("mean", mean), ("std", std)):
    if len(values) != channels:
      raise ValueError(f"--{what} has {len(values)} values; {name} has "
                       f"{channels} channels")
  return dataclasses.replace(spec, mean=tuple(float(v) for v in mean),
                             std=tuple(float(v) for v in std))


def _statistics(spec, data_dir):
  """Per-channel mean and std in [0, 1] of up to `STATS_EXAMPLES` training
  images, read in file order."""
  ds = builder(spec, data_dir).as_dataset(split=spec.train_split,
                                          shuffle_files=False)
  total = np.zeros(spec.image_shape[-1])
  squares = np.zeros(spec.image_shape[-1])
  count = 0
  for images, _ in (ds.take(STATS_EXAMPLES).map(to_example(spec))
                    .batch(1000).as_numpy_iterator()):
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255
    total += pixels.sum(0)
    squares += np.square(pixels).sum(0)
    count += len(pixels)
  if count == 0:
    raise ValueError(f"{spec.name}: the training split has no examples")
  mean = total / count
  return tuple(mean), tuple(np.sqrt(np.maximum(squares / count - mean ** 2,
                                               1e-12)))
