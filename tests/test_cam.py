"""x -> CAM -> eps_map: agreement with tf-keras-vis and matplotlib, mask rules."""

from absl.testing import parameterized
import keras
import matplotlib
import numpy as np
import tensorflow as tf
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.utils.scores import CategoricalScore

from part_tf.cam import budgets
from part_tf.cam import ClassActivationMaps
from part_tf.cam import eps_map_from_cam
from part_tf.cam import jet_colormap
from part_tf.cam import normalized_cam
from part_tf.cam import resize_maps
from part_tf.models import CAM_LAYER
from part_tf.models import resnet18
from part_tf.models import small_cnn

EPS, EPS_LOW = 8 / 255, 4 / 255


def region_model(size=16, channels=1, region=(slice(2, 6), slice(9, 13))):
  """A classifier whose logits depend only on the features inside `region`.

  The features at the CAM layer are 1 inside the region and 0 outside (a 1x1
  conv with zero kernel and bias 1, masked), so the CAM of the predicted class
  is a positive constant inside the region and 0 outside: the budget must be
  full exactly there.
  """
  inputs = keras.Input((size, size, channels))
  feats = keras.layers.Conv2D(4, 1, kernel_initializer="zeros",
                              bias_initializer="ones")(inputs)
  mask = np.zeros((1, size, size, 1), np.float32)
  mask[0, region[0], region[1]] = 1.0
  feats = keras.layers.Lambda(lambda f: f * mask)(feats)
  feats = keras.layers.ReLU(name=CAM_LAYER)(feats)
  pooled = keras.layers.GlobalAveragePooling2D()(feats)
  logits = keras.layers.Dense(
      2, kernel_initializer=keras.initializers.Constant([[1.0, -1.0]] * 4))(
          pooled)
  return keras.Model(inputs, logits), mask[0, ..., 0].astype(bool)


class GradcamPlusPlusTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("small_cnn",), ("resnet18",))
  def test_in_graph_maps_match_tf_keras_vis_eager(self, name):
    keras.utils.set_random_seed(0)
    if name == "small_cnn":
      model = small_cnn((28, 28, 1), 10)
    else:
      model = resnet18((32, 32, 3), 10)
    x = tf.random.stateless_uniform((6, *model.input_shape[1:]), [1, 2])
    ours = tf.function(ClassActivationMaps(model))(x)
    # The library's own eager call, with its own score on the predicted classes.
    predicted = np.argmax(model(x).numpy(), axis=-1)
    theirs = GradcamPlusPlus(model)(
        CategoricalScore(list(predicted)), x.numpy(), penultimate_layer=CAM_LAYER,
        seek_penultimate_conv_layer=False, expand_cam=False,
        normalize_cam=False)
    size = model.input_shape[1:3]
    ours01, ok = normalized_cam(ours, size)
    theirs01, _ = normalized_cam(tf.constant(theirs, tf.float32), size)
    self.assertAllEqual(ok, [True] * 6)
    self.assertAllClose(ours01, theirs01, atol=2e-4, rtol=0)

  def test_maps_see_weight_updates(self):
    model = small_cnn((28, 28, 1), 10)
    cams = ClassActivationMaps(model)
    x = tf.random.stateless_uniform((2, 28, 28, 1), [0, 3])
    before = cams(x).numpy()
    for v in model.trainable_variables:
      v.assign(v * 1.5 + 0.01)
    self.assertNotAllClose(before, cams(x).numpy())

  def test_unknown_layer_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "no layer named 'nope'"):
      ClassActivationMaps(small_cnn((28, 28, 1), 10), layer_name="nope")

  @parameterized.parameters(("zscore", 1), ("zscore", 3), ("official", 3))
  def test_region_model_gets_full_budget_exactly_on_its_region(self, rule,
                                                               channels):
    model, region = region_model(channels=channels)
    x = tf.random.stateless_uniform((3, 16, 16, channels), [5, 6])
    cam = ClassActivationMaps(model)(x)
    eps_map = eps_map_from_cam(cam, (16, 16, channels), EPS, EPS_LOW,
                               rule).numpy()
    if rule == "official":
      # The colormap makes the mask per channel: the region's colour is jet(1)
      # = (0.5, 0, 0), the rest jet(0) = (0, 0, 0.5), so the z-score over all
      # values picks the red channel inside the region and the blue channel
      # outside it, as the reference code does.
      expected = np.stack([region, np.zeros_like(region), ~region], axis=-1)
    else:
      expected = np.repeat(region[..., None], channels, axis=-1)
    for image in eps_map:
      self.assertAllClose(image, np.where(expected, EPS, EPS_LOW))

  def test_soft_rule_interpolates(self):
    model, region = region_model()
    cam = ClassActivationMaps(model)(tf.zeros((1, 16, 16, 1)))
    eps_map = eps_map_from_cam(cam, (16, 16, 1), EPS, EPS_LOW, "soft").numpy()
    self.assertAllClose(eps_map[0, ..., 0], np.where(region, EPS, EPS_LOW))
    cam = tf.constant(np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4))
    eps_map = eps_map_from_cam(cam, (4, 4, 2), EPS, EPS_LOW, "soft").numpy()
    expected = EPS_LOW + (EPS - EPS_LOW) * cam.numpy()[0]
    self.assertAllClose(eps_map[0, ..., 1], expected)


class MaskRuleTest(tf.test.TestCase, parameterized.TestCase):

  def test_zscore_rule_matches_numpy(self):
    rng = np.random.default_rng(0)
    cam = rng.gamma(0.5, size=(4, 8, 8)).astype(np.float32)
    eps_map = eps_map_from_cam(tf.constant(cam), (8, 8, 3), EPS, EPS_LOW,
                               "zscore").numpy()
    for raw, got in zip(cam, eps_map):
      c = (raw - raw.min()) / (raw.max() - raw.min())
      s = c ** 2
      z = (s - s.mean()) / s.std()
      self.assertAllClose(got, np.repeat(np.where(z > 1, EPS, EPS_LOW)[..., None],
                                         3, -1))
      self.assertBetween((got == EPS).mean(), 0.01, 0.5)

  def test_official_rule_matches_numpy_with_matplotlib_jet(self):
    rng = np.random.default_rng(1)
    cam = rng.gamma(0.5, size=(3, 4, 4)).astype(np.float32)
    eps_map = eps_map_from_cam(tf.constant(cam), (16, 16, 3), EPS, EPS_LOW,
                               "official").numpy()
    up = tf.image.resize(cam[..., None], [16, 16], "bicubic")[..., 0].numpy()
    for raw, got in zip(up, eps_map):
      c = np.maximum(raw, 0)
      c = (c - c.min()) / (c.max() - c.min())
      rgb = matplotlib.colormaps["jet"](c ** 2)[..., :3]
      z = (rgb - rgb.mean()) / rgb.std()
      self.assertAllClose(got, np.where(z > 1, EPS, EPS_LOW))
      self.assertNotAllEqual(got[..., 0], got[..., 2])  # differs per channel

  def test_official_rule_needs_rgb(self):
    with self.assertRaisesRegex(ValueError, "3-channel"):
      eps_map_from_cam(tf.ones((1, 4, 4)), (8, 8, 1), EPS, EPS_LOW, "official")

  def test_jet_matches_matplotlib(self):
    values = np.concatenate([np.linspace(0, 1, 10001), [0.0, 1.0, 0.5]])
    self.assertAllClose(jet_colormap(tf.constant(values, tf.float32)),
                        matplotlib.colormaps["jet"](values)[:, :3], atol=1e-6)

  @parameterized.parameters(("bilinear",), ("bicubic",))
  def test_resize_matches_tf_image_resize(self, method):
    cam = tf.random.stateless_uniform((2, 4, 5), [0, 0])
    self.assertAllClose(resize_maps(cam, (32, 29), method),
                        tf.image.resize(cam[..., None], [32, 29], method)[..., 0],
                        atol=1e-5)

  @parameterized.parameters(*budgets.MASK_RULES)
  def test_constant_map_falls_back_to_uniform_budget(self, rule):
    eps_map = eps_map_from_cam(tf.zeros((2, 4, 4)), (8, 8, 3), EPS, EPS_LOW,
                               rule)
    self.assertAllEqual(eps_map, tf.fill((2, 8, 8, 3), tf.constant(EPS, tf.float32)))

  @parameterized.parameters(*budgets.MASK_RULES)
  def test_equal_budgets_give_uniform_map(self, rule):
    cam = tf.random.stateless_uniform((2, 4, 4), [2, 2])
    eps_map = eps_map_from_cam(cam, (8, 8, 3), EPS, EPS, rule)
    self.assertAllEqual(eps_map, tf.fill((2, 8, 8, 3), tf.constant(EPS, tf.float32)))


if __name__ == "__main__":
  tf.test.main()
