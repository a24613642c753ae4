"""RandAugment + Cutout views: Keras' RandAugment operations, chosen per
image, stateless (tf.data, resumed runs), and Cutout's square."""

import numpy as np
import tensorflow as tf

from part_tf.data import view_augmentation as va


def _images(n=8, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, (n, size, size, 3)), tf.float32)


def _one_image(transforms, b):
  """Keras' per-batch transformation parameters, cut to image `b`."""
  def cut(key, value):
    if key == "input_shape":
      return (1, *value[1:])
    if key == "batch_size":
      return 1
    return value[b:b + 1] if tf.is_tensor(value) else value
  return {name: None if t is None else {k: cut(k, v) for k, v in t.items()}
          for name, t in transforms.items()}


class RandAugmentTest(tf.test.TestCase):

  def test_per_image_operations_are_keras_randaugments(self):
    images = _images()
    layer = va._randaugment()  # pylint: disable=protected-access
    transforms = va.transformations(images, tf.constant([1, 2], tf.int64))
    rng = np.random.default_rng(1)
    operations = rng.integers(0, len(va.operation_names()), (8, 2))
    ours = va.apply_operations(images, transforms,
                               tf.constant(operations, tf.int32)).numpy()
    for b, pair in enumerate(operations):
      # Keras' own RandAugment on this image alone, with its pair and its
      # parameters.
      keras_out = layer.transform_images(
          images[b:b + 1], {"transforms": _one_image(transforms, b),
                            "layer_idxes": tf.constant(pair, tf.int32)},
          training=True)
      self.assertAllEqual(ours[b], keras_out[0])
    self.assertNotAllClose(ours, images)
    self.assertIn(va.operation_names().index("equalization"), operations)

  def test_equalize_is_keras_equalization_image_by_image(self):
    rng = np.random.default_rng(2)
    images = np.concatenate([
        rng.integers(0, 256, (3, 16, 16, 3)),
        rng.uniform(0, 255, (3, 16, 16, 3)),     # after a rotation, say
        rng.integers(40, 60, (2, 16, 16, 3)),    # a narrow histogram
        np.full((1, 16, 16, 3), 77.0)]).astype(np.float32)
    images[-2, ..., 1] = np.where(images[-2, ..., 1] > 50, 200.0, 10.0)
    layer = va._randaugment().equalization  # pylint: disable=protected-access
    ours = va.equalize(tf.constant(images)).numpy()
    for image, got in zip(images, ours):
      self.assertAllEqual(got, layer.transform_images(image[None], None)[0])
    self.assertNotAllClose(ours[:8], images[:8])
    self.assertAllEqual(ours[-1], images[-1])  # one level: unchanged

  def test_operations_and_parameters_vary_per_image(self):
    same = tf.repeat(_images(1), 64, axis=0)  # one image, 64 times
    out = va.randaugment(same, tf.constant([3, 4], tf.int64)).numpy()
    distinct = {out[i].tobytes() for i in range(64)}
    self.assertGreater(len(distinct), 32)
    self.assertEqual(va.operation_names()[0], "random_shear")
    self.assertLen(va.operation_names(), 11)

  def test_stateless(self):
    x = tf.cast(_images(16), tf.uint8)
    seed = tf.constant([5, 6], tf.int64)
    layer = va._randaugment()  # pylint: disable=protected-access
    state = layer.generator.state.numpy().copy()
    first = va.randaugment_cutout(x, seed).numpy()
    self.assertAllEqual(va.randaugment_cutout(x, seed), first)
    self.assertNotAllEqual(
        va.randaugment_cutout(x, tf.constant([5, 7], tf.int64)), first)
    # In a parallel tf.data map, each element is its seed's batch, in any
    # run of the pipeline.
    seeds = tf.constant([[5, 6], [5, 7], [8, 9], [5, 6]], tf.int64)
    pipeline = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: va.randaugment_cutout(x, s), num_parallel_calls=4,
        deterministic=True)
    for _ in range(2):
      batches = [b.numpy() for b in pipeline]
      self.assertAllEqual(batches[0], first)
      self.assertAllEqual(batches[3], first)
    self.assertAllEqual(layer.generator.state, state)  # Keras' state unused
    self.assertEqual(first.dtype, np.uint8)
    self.assertEqual(first.shape, x.shape)


class CutoutTest(tf.test.TestCase):

  def test_a_square_of_half_the_side_clipped_at_the_border(self):
    white = tf.fill([256, 32, 32, 3], 255.0)
    out = va.cutout(white, tf.constant([0, 1], tf.int64), 16).numpy()
    zero = out[..., 0] == 0
    self.assertAllEqual(zero, np.repeat(zero[..., None], 3, -1).all(-1))
    sides = []
    for mask in zero:
      rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
      # A rectangle: rows x cols.
      self.assertAllEqual(mask, np.outer(mask.any(1), mask.any(0)))
      for band in (rows, cols):
        self.assertAllEqual(band, np.arange(band[0], band[-1] + 1))
        # Centre c in [0, 32): rows [max(c - 8, 0), min(c + 8, 32)).
        self.assertBetween(len(band), 8, 16)
        if 0 < band[0] and band[-1] < 31:
          self.assertLen(band, 16)
      sides.append((len(rows), len(cols)))
    self.assertIn((16, 16), sides)
    self.assertLess(min(min(s) for s in sides), 12)  # some touch the border


if __name__ == "__main__":
  tf.test.main()
