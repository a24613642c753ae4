"""Models: sizes, input normalisation inside the model, the named CAM layer."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from part_tf.models import build_model
from part_tf.models import CAM_LAYER


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ("resnet18", (28, 28, 1), 10, (4, 4, 512)),
      ("resnet18", (32, 32, 3), 10, (4, 4, 512)),
      ("resnet18", (64, 64, 3), 200, (8, 8, 512)),
      ("small_cnn", (28, 28, 1), 10, (14, 14, 64)),
      ("small_cnn", (32, 32, 3), 10, (16, 16, 64)),
      ("small_cnn", (64, 64, 3), 200, (32, 32, 64)))
  def test_shapes_and_cam_layer(self, name, shape, classes, cam_shape):
    model = build_model(name, shape, classes)
    x = tf.random.stateless_uniform((2, *shape), [0, 1])
    self.assertEqual(model(x).shape, (2, classes))
    self.assertEqual(tuple(model.get_layer(CAM_LAYER).output.shape[1:]),
                     cam_shape)

  def test_resnet18_has_the_published_size(self):
    # ResNet-18 for CIFAR-10: about 11.2M parameters (11,173,962 in the
    # PyTorch reference; the pre-activation variant has one more BN, and our
    # count includes the BN moving statistics and the normalisation layer).
    params = build_model("resnet18", (32, 32, 3), 10).count_params()
    self.assertBetween(params, 11.1e6, 11.25e6)

  def test_normalisation_is_inside_the_model(self):
    mean, std = [0.2, 0.4, 0.6], [0.1, 0.2, 0.3]
    keras.utils.set_random_seed(0)
    plain = build_model("small_cnn", (8, 8, 3), 3)
    keras.utils.set_random_seed(0)
    normed = build_model("small_cnn", (8, 8, 3), 3, mean=mean, std=std)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    z = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    self.assertAllClose(normed(x), plain(z), atol=1e-4)

  def test_bad_names_and_stats(self):
    with self.assertRaisesRegex(ValueError, "unknown model 'vgg'"):
      build_model("vgg", (32, 32, 3), 10)
    with self.assertRaisesRegex(ValueError, "need 3 values"):
      build_model("small_cnn", (32, 32, 3), 10, mean=[0.5], std=[0.5])


if __name__ == "__main__":
  tf.test.main()
