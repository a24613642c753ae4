"""Models: sizes, input normalisation inside the model, the named CAM layer."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from part_tf.models import build_model
from part_tf.models import CAM_LAYER
from part_tf.models import wide_resnet


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  # WideResNet sizes for 10 classes: (trainable, count_params band). The
  # trainable counts are exactly those of the PyTorch reference `wideresnet.py`
  # (46,160,474 for WRN-34-10, published as 46.2M; 36,479,194 for WRN-28-10).
  # count_params adds the BN moving mean and variance, 2 per BN channel
  # (11,216 channels -> 22,432 for WRN-34-10, 8,976 -> 17,952 for WRN-28-10),
  # giving 46,182,906 and 36,497,146; the Normalization layer holds its mean
  # and variance as constants and adds nothing. The exact trainable count
  # catches any change of the architecture; the +-15k band on count_params
  # checks that accounting (BN statistics in, no normalisation weights).
  _WRN34_10_SIZE = (46_160_474, (46.168e6, 46.198e6))
  _WRN28_10_SIZE = (36_479_194, (36.482e6, 36.512e6))

  @parameterized.parameters(
      ("resnet18", (28, 28, 1), 10, (4, 4, 512)),
      ("resnet18", (32, 32, 3), 10, (4, 4, 512)),
      ("resnet18", (64, 64, 3), 200, (8, 8, 512)),
      ("small_cnn", (28, 28, 1), 10, (14, 14, 64)),
      ("small_cnn", (32, 32, 3), 10, (16, 16, 64)),
      ("small_cnn", (64, 64, 3), 200, (32, 32, 64)),
      # The 10-class WRNs also check their size, so each is built only once.
      ("wrn34_10", (32, 32, 3), 10, (8, 8, 640), _WRN34_10_SIZE),
      ("wrn28_10", (32, 32, 3), 10, (8, 8, 640), _WRN28_10_SIZE),
      ("wrn34_10", (64, 64, 3), 200, (16, 16, 640)))
  def test_shapes_and_cam_layer(self, name, shape, classes, cam_shape,
                                size=None):
    model = build_model(name, shape, classes)
    x = tf.random.stateless_uniform((2, *shape), [0, 1])
    self.assertEqual(model(x).shape, (2, classes))
    self.assertEqual(tuple(model.get_layer(CAM_LAYER).output.shape[1:]),
                     cam_shape)
    if size is not None:
      trainable, (low, high) = size
      self.assertEqual(
          sum(int(np.prod(w.shape)) for w in model.trainable_weights),
          trainable)
      self.assertBetween(model.count_params(), low, high)

  def test_resnet18_has_the_published_size(self):
    # ResNet-18 for CIFAR-10: about 11.2M parameters (11,173,962 in the
    # PyTorch reference; the pre-activation variant has one more BN, and our
    # count includes the BN moving statistics and the normalisation layer).
    params = build_model("resnet18", (32, 32, 3), 10).count_params()
    self.assertBetween(params, 11.1e6, 11.25e6)

  def test_wide_resnet_depth_and_dropout(self):
    for depth in (30, 4, 0):
      with self.assertRaisesRegex(ValueError, "depth must be 6n \\+ 4"):
        wide_resnet((32, 32, 3), 10, depth=depth)
    # WRN-10-1 (one block per group) is tiny: dropout sits in every block and
    # is off at inference.
    model = wide_resnet((16, 16, 3), 5, depth=10, widen_factor=1, dropout=0.3)
    self.assertLen([layer for layer in model.layers
                    if isinstance(layer, keras.layers.Dropout)], 3)
    x = tf.random.stateless_uniform((2, 16, 16, 3), [0, 2])
    self.assertAllClose(model(x, training=False), model(x, training=False))

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
