"""Common-corruption accuracy, on TFDS mock data."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from part_tf import corruptions


class CorruptionsTest(tf.test.TestCase):

  def test_names(self):
    names = corruptions.corruption_names()
    self.assertLen(names, 19)
    self.assertIn("gaussian_noise", names)
    self.assertIn("brightness", names)

  def test_accuracy_per_set_against_a_direct_count(self):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model_fn = lambda x: model(x, training=False)
    with tfds.testing.mock_data(num_examples=20,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      result = corruptions.corruption_accuracy(
          model_fn, ["gaussian_noise", "fog"], severities=(1, 3),
          data_dir=self.get_temp_dir(), batch_size=8)
      # (batch_size=-1 would batch by sys.maxsize under mock_data.)
      x, y = next(iter(tfds.as_numpy(tfds.load(
          "cifar10_corrupted/fog_3", split="test", as_supervised=True,
          data_dir=self.get_temp_dir()).batch(100))))
    expected = np.mean(np.argmax(model_fn(x / 255.0), -1) == y)
    self.assertAllClose(result["accuracy"]["fog"][3], expected)
    self.assertCountEqual(result["accuracy"], ["gaussian_noise", "fog"])
    self.assertCountEqual(result["accuracy"]["fog"], [1, 3])
    self.assertAllClose(result["per_corruption"]["fog"],
                        np.mean(list(result["accuracy"]["fog"].values())))
    self.assertAllClose(result["mean"], np.mean(
        [v for a in result["accuracy"].values() for v in a.values()]))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "unknown corruptions"):
      corruptions.corruption_accuracy(lambda x: x, ["rain"])
    with self.assertRaisesRegex(ValueError, "severities"):
      corruptions.corruption_accuracy(lambda x: x, ["fog"], severities=(6,))


if __name__ == "__main__":
  tf.test.main()
