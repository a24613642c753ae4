"""The augmentation of consistency regularisation's views beyond crop + flip.

Tack et al. (AAAI 2022) draw each view as crop + flip, then AutoAugment's
CIFAR-10 policy, then Cutout of half the image's side
(alinlab/consistency-adversarial, `datasets/datasets.py`, `--augment_type
autoaug`). Keras 3 has no AutoAugment; its nearest layer is
`keras.layers.RandAugment` (2 operations out of 11 per image, Keras'
default strength 0.5), which `randaugment_cutout` applies after the
pipeline's crop + flip, followed by Cutout.

The pipeline is stateless (a resumed run sees the same batches), so the
randomness must be too. `keras.layers.RandAugment` draws from a stateful
`SeedGenerator` and picks one pair of operations for the whole batch; here
its 11 operation layers are used as they are, with per-image random
parameters drawn from a stateless seed (`_StatelessSeeds`), and the pair of
operations is chosen per image, as RandAugment and AutoAugment do.
"""

import functools

import keras
import tensorflow as tf

VIEW_AUGMENTATIONS = ("crop_flip", "randaugment")

# keras.layers.RandAugment's defaults.
_NUM_OPS = 2
_STRENGTH = 0.5


class _StatelessSeeds(keras.random.SeedGenerator):
  """A `SeedGenerator` whose draws are pure functions of a seed tensor.

  Keras' random ops accept a `SeedGenerator` and call its `next()`; this
  one returns `stateless_fold_in(seed, 1)`, `(seed, 2)`, ... in call order,
  which is the same on every trace. It holds no variable (its parent's
  `__init__`, which makes one, is not called).
  """

  def __init__(self, seed):  # pylint: disable=super-init-not-called
    self._seed = seed
    self._draws = 0

  def next(self, ordered=True):
    del ordered
    self._draws += 1
    return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


@functools.lru_cache(maxsize=None)
def _randaugment() -> keras.layers.RandAugment:
  """One RandAugment layer for uint8-valued images (its operation layers
  hold no state that the stateless calls here use)."""
  with tf.init_scope():  # not inside the tf.data function being traced
    return keras.layers.RandAugment(value_range=(0, 255), num_ops=_NUM_OPS,
                                    factor=_STRENGTH)


def operation_names() -> tuple[str, ...]:
  """RandAugment's operation layers, in Keras' order."""
  return tuple(_randaugment()._AUGMENT_LAYERS)  # pylint: disable=protected-access


def transformations(images: tf.Tensor, seed: tf.Tensor) -> dict:
  """Per-image random parameters of every RandAugment operation, drawn by
  the operation layers themselves from the stateless `seed`."""
  layer = _randaugment()
  seeds = _StatelessSeeds(seed)
  return {name: getattr(layer, name).get_random_transformation(
      images, training=True, seed=seeds) for name in operation_names()}


def equalize(images: tf.Tensor, bins: int = 256) -> tf.Tensor:
  """Histogram equalisation of each channel of each image, values in
  [0, 255]: `keras.layers.Equalization` applied to one image at a time,
  for a whole batch at once.

  Keras' layer takes one histogram per channel over the whole batch; the
  RandAugment operation equalises each image by its own histogram (PIL's
  `ImageOps.equalize`, which AutoAugment and RandAugment use). Written out
  (with the layer's arithmetic) because calling the layer image by image
  doubles the cost of the views; tests/test_view_augmentation.py checks it
  against the layer on single images.
  """
  images = tf.cast(images, tf.float32)
  batch, height, width, channels = (tf.shape(images)[0], *images.shape[1:])
  per_channel = tf.reshape(tf.transpose(images, [0, 3, 1, 2]),
                           [-1, height * width])              # [B*C, H*W]
  groups = tf.shape(per_channel)[0]
  index = tf.clip_by_value(
      tf.cast(per_channel * (bins - 1) / 255.0, tf.int32), 0, bins - 1)
  offsets = tf.range(groups)[:, None] * bins
  hist = tf.reshape(tf.math.bincount(tf.reshape(index + offsets, [-1]),
                                     minlength=groups * bins,
                                     maxlength=groups * bins),
                    [groups, bins])
  cdf = tf.cumsum(hist, axis=1)
  cdf_min = tf.reduce_min(tf.where(cdf > 0, cdf, tf.reduce_max(cdf)),
                          axis=1, keepdims=True)
  denominator = cdf[:, -1:] - cdf_min
  denominator = tf.where(denominator == 0, 1, denominator)
  lookup = tf.clip_by_value(tf.round(
      tf.cast((cdf - cdf_min) * 255, tf.float32)
      / tf.cast(denominator, tf.float32)), 0.0, 255.0)
  position = tf.cast(tf.clip_by_value((per_channel / 255.0) * (bins - 1),
                                      0, bins - 1), tf.int32)
  equalized = tf.gather(lookup, position, batch_dims=1)
  single_level = tf.math.count_nonzero(hist, axis=1, keepdims=True) <= 1
  equalized = tf.where(single_level, per_channel, equalized)
  return tf.transpose(tf.reshape(equalized, [batch, channels, height, width]),
                      [0, 2, 3, 1])


def _transform(name: str, images: tf.Tensor, transform) -> tf.Tensor:
  """RandAugment's operation `name` on each image of the batch."""
  if name == "equalization":
    return equalize(images)
  return getattr(_randaugment(), name).transform_images(images, transform,
                                                        training=True)


def apply_operations(images: tf.Tensor, transforms: dict,
                     operations: tf.Tensor) -> tf.Tensor:
  """Applies to each image its operations, in order.

  As `keras.layers.RandAugment.transform_images` does image by image, whose
  operation indices are one per batch; here they are per image: int
  [B, num_ops].
  """
  for op in range(operations.shape[1]):
    for index, name in enumerate(operation_names()):
      chosen = tf.equal(operations[:, op], index)[:, None, None, None]
      transformed = _transform(name, images, transforms[name])
      images = tf.where(chosen, tf.cast(transformed, images.dtype), images)
  return images


def randaugment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """RandAugment on a float32 batch [B, H, W, C] of values in [0, 255]: two
  of the 11 operations per image, drawn from the stateless `seed` [2]."""
  choice_seed, parameter_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  operations = tf.random.stateless_uniform(
      [tf.shape(images)[0], _NUM_OPS], seed=choice_seed, minval=0,
      maxval=len(operation_names()), dtype=tf.int32)
  return apply_operations(images, transformations(images, parameter_seed),
                          operations)


def cutout(images: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
  """Cutout (DeVries & Taylor; the `CutoutDefault` of Tack et al.'s code):
  per image a `size` x `size` square of zeros centred on a uniformly drawn
  pixel, clipped at the border."""
  _, height, width, _ = images.shape
  row_seed, col_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  batch = tf.shape(images)[0]
  rows = tf.random.stateless_uniform([batch, 1], seed=row_seed, minval=0,
                                     maxval=height, dtype=tf.int32)
  cols = tf.random.stateless_uniform([batch, 1], seed=col_seed, minval=0,
                                     maxval=width, dtype=tf.int32)
  half = size // 2
  in_rows = ((tf.range(height)[None, :] >= rows - half)
             & (tf.range(height)[None, :] < rows + half))    # [B, H]
  in_cols = ((tf.range(width)[None, :] >= cols - half)
             & (tf.range(width)[None, :] < cols + half))     # [B, W]
  square = in_rows[:, :, None] & in_cols[:, None, :]
  return tf.where(square[..., None], tf.zeros_like(images), images)


def randaugment_cutout(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """RandAugment then Cutout of half the side on a uint8 batch
  [B, H, W, C]; uint8 out (rounded), like the PIL images of the paper's
  pipeline."""
  rand_seed, cut_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  images = randaugment(tf.cast(x, tf.float32), rand_seed)
  images = tf.clip_by_value(tf.round(images), 0.0, 255.0)
  return tf.cast(cutout(images, cut_seed, x.shape[1] // 2), tf.uint8)
