"""x -> CAM -> eps_map: agreement with tf-keras-vis and matplotlib, mask rules."""

import itertools

from absl.testing import parameterized
import keras
import matplotlib
import numpy as np
from PIL import Image
import tensorflow as tf
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.layercam import Layercam
from tf_keras_vis.utils.scores import CategoricalScore

from part_tf.cam import budgets
from part_tf.cam import CAM_METHODS
from part_tf.cam import ClassActivationMaps
from part_tf.cam import eps_map_from_cam
from part_tf.cam import jet_colormap
from part_tf.cam import normalized_cam
from part_tf.cam import resize_maps
from part_tf.cam.maps import resize_like_pil
from part_tf.models import CAM_LAYER
from part_tf.models import resnet18
from part_tf.models import small_cnn
from part_tf.registry import MASK_RULES

EPS, EPS_LOW = 8 / 255, 4 / 255
TF_KERAS_VIS = {"gradcam_plus_plus": GradcamPlusPlus, "gradcam": Gradcam,
                "layercam": Layercam}
REGION_CASES = (("zscore", 1), ("zscore", 3), ("official", 3))


def region_model(size=16, channels=1, region=(slice(2, 6), slice(9, 13)),
                 feature_name=CAM_LAYER):
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
  feats = keras.layers.ReLU(name=feature_name)(feats)
  pooled = keras.layers.GlobalAveragePooling2D()(feats)
  logits = keras.layers.Dense(
      2, kernel_initializer=keras.initializers.Constant([[1.0, -1.0]] * 4))(
          pooled)
  return keras.Model(inputs, logits), mask[0, ..., 0].astype(bool)


def _model(name):
  keras.utils.set_random_seed(0)
  if name == "small_cnn":
    return small_cnn((28, 28, 1), 10)
  return resnet18((32, 32, 3), 10)


class ClassActivationMapsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*itertools.product(TF_KERAS_VIS,
                                               ("small_cnn", "resnet18")))
  def test_in_graph_maps_match_tf_keras_vis_eager(self, method, name):
    model = _model(name)
    x = tf.random.stateless_uniform((6, *model.input_shape[1:]), [1, 2])
    ours = tf.function(ClassActivationMaps(model, method))(x)
    # The library's own eager call, with its own score on the predicted classes.
    predicted = np.argmax(model(x).numpy(), axis=-1)
    theirs = TF_KERAS_VIS[method](model)(
        CategoricalScore(list(predicted)), x.numpy(), penultimate_layer=CAM_LAYER,
        seek_penultimate_conv_layer=False, expand_cam=False,
        normalize_cam=False)
    size = model.input_shape[1:3]
    ours01, ok = normalized_cam(ours, size)
    theirs01, theirs_ok = normalized_cam(tf.constant(theirs, tf.float32), size)
    # An untrained network's Grad-CAM can be negative everywhere (all zero
    # after the ReLU): both must find the same such maps, and few.
    self.assertAllEqual(ok, theirs_ok)
    self.assertGreaterEqual(int(tf.reduce_sum(tf.cast(ok, tf.int32))), 5)
    self.assertAllClose(tf.boolean_mask(ours01, ok),
                        tf.boolean_mask(theirs01, ok), atol=2e-4, rtol=0)
    if not all(ok.numpy()):  # (their raw maps of those images are 0 too)
      self.assertAllClose(tf.boolean_mask(theirs, ~ok),
                          tf.zeros_like(tf.boolean_mask(theirs, ~ok)))

  @parameterized.parameters(*CAM_METHODS.names())
  def test_maps_see_weight_updates(self, method):
    model = small_cnn((28, 28, 1), 10)
    cams = ClassActivationMaps(model, method)
    x = tf.random.stateless_uniform((2, 28, 28, 1), [0, 3])
    before = cams(x).numpy()
    for v in model.trainable_variables:
      v.assign(v * 1.5 + 0.01)
    self.assertNotAllClose(before, cams(x).numpy())

  @parameterized.parameters(*CAM_METHODS.names())
  def test_unknown_layer_is_a_clear_error(self, method):
    with self.assertRaisesRegex(ValueError, "no layer named 'nope'"):
      ClassActivationMaps(small_cnn((28, 28, 1), 10), method, layer_name="nope")

  def test_unknown_method_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError,
                                "unknown CAM method 'scorecam'.*xgradcam"):
      ClassActivationMaps(small_cnn((28, 28, 1), 10), "scorecam")

  @parameterized.parameters(*CAM_METHODS.names())
  def test_traces_under_xla_like_eager(self, method):
    model = small_cnn((28, 28, 1), 10)
    cams = ClassActivationMaps(model, method)
    x = tf.random.stateless_uniform((4, 28, 28, 1), [7, 8])
    eager = cams(x).numpy()
    compiled = tf.function(cams, jit_compile=True)(x).numpy()
    self.assertGreater(eager.max(), 0.0)
    self.assertAllClose(compiled, eager, rtol=1e-4, atol=1e-5 * eager.max())

  @parameterized.parameters(
      *((method, *case) for method, case in itertools.product(
          CAM_METHODS.names(), REGION_CASES)))
  def test_region_model_gets_full_budget_exactly_on_its_region(self, method,
                                                               rule, channels):
    model, region = region_model(channels=channels)
    x = tf.random.stateless_uniform((3, 16, 16, channels), [5, 6])
    cam = tf.function(ClassActivationMaps(model, method))(x)
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

  @parameterized.parameters(*CAM_METHODS.names())
  def test_user_layer_name_overrides_the_default(self, method):
    # No layer is called CAM_LAYER here: the maps come from the named layer.
    model, region = region_model(feature_name="region_features")
    cam = ClassActivationMaps(model, method, layer_name="region_features")(
        tf.random.stateless_uniform((2, 16, 16, 1), [3, 4]))
    eps_map = eps_map_from_cam(cam, (16, 16, 1), EPS, EPS_LOW, "zscore")
    for image in eps_map.numpy():
      self.assertAllClose(image[..., 0], np.where(region, EPS, EPS_LOW))

  def test_soft_rule_interpolates(self):
    model, region = region_model()
    cam = ClassActivationMaps(model)(tf.zeros((1, 16, 16, 1)))
    eps_map = eps_map_from_cam(cam, (16, 16, 1), EPS, EPS_LOW, "soft").numpy()
    self.assertAllClose(eps_map[0, ..., 0], np.where(region, EPS, EPS_LOW))
    cam = tf.constant(np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4))
    eps_map = eps_map_from_cam(cam, (4, 4, 2), EPS, EPS_LOW, "soft").numpy()
    expected = EPS_LOW + (EPS - EPS_LOW) * cam.numpy()[0]
    self.assertAllClose(eps_map[0, ..., 1], expected)


def _xgradcam_numpy(features, grads):
  """pytorch-grad-cam's XGradCAM on [B, h, w, K] arrays, in float64."""
  features, grads = np.float64(features), np.float64(grads)
  weights = ((grads * features).sum(axis=(1, 2), keepdims=True)
             / (features.sum(axis=(1, 2), keepdims=True) + 1e-7))
  return np.maximum((weights * features).sum(axis=-1), 0.0)


class XGradcamTest(tf.test.TestCase, parameterized.TestCase):

  def test_matches_formula_where_the_gradient_is_known(self):
    # features A = ReLU(x) -> Flatten -> Dense(W, b): dS_c/dA = W[:, c],
    # reshaped to [h, w, K], which varies over space (unlike after a global
    # pooling, where XGrad-CAM would equal Grad-CAM).
    h, w, k, classes = 6, 5, 3, 4
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(h * w * k, classes)).astype(np.float32)
    bias = rng.normal(size=(classes,)).astype(np.float32)
    inputs = keras.Input((h, w, k))
    feats = keras.layers.ReLU(name=CAM_LAYER)(inputs)
    logits = keras.layers.Dense(
        classes, kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias))(
            keras.layers.Flatten()(feats))
    model = keras.Model(inputs, logits)
    x = rng.uniform(-0.5, 1.0, size=(5, h, w, k)).astype(np.float32)
    x[0, ..., 2] = -1.0  # a channel that is all zero: its weight is 0, no NaN
    features = np.maximum(x, 0.0)
    predicted = np.argmax(features.reshape(5, -1) @ kernel + bias, axis=-1)
    grads = kernel[:, predicted].T.reshape(5, h, w, k)
    expected = _xgradcam_numpy(features, grads)
    ours = tf.function(ClassActivationMaps(model, "xgradcam"))(tf.constant(x))
    self.assertAllClose(ours, expected, rtol=1e-5, atol=1e-6)
    self.assertGreater((expected > 0).mean(), 0.2)
    self.assertGreater((expected == 0).mean(), 0.05)  # the ReLU bites
    # The test tells XGrad-CAM from Grad-CAM (mean gradient as the weight).
    gradcam = np.maximum(
        (grads.mean(axis=(1, 2), keepdims=True) * features).sum(-1), 0.0)
    self.assertNotAllClose(expected, gradcam, rtol=1e-2)

  @parameterized.parameters(
      ("small_cnn", ("pool2", "flatten", "fc1", "logits")),
      ("resnet18", ("pool", "logits")))
  def test_matches_eager_numpy_from_features_and_gradients(self, name, head):
    model = _model(name)
    x = tf.random.stateless_uniform((4, *model.input_shape[1:]), [9, 9])
    # Features from the trunk, gradients through the head layers applied to
    # them: a route that never differentiates the whole model's graph.
    features = keras.Model(model.inputs,
                           model.get_layer(CAM_LAYER).output)(x, training=False)
    with tf.GradientTape() as tape:
      tape.watch(features)
      logits = features
      for layer in head:
        logits = model.get_layer(layer)(logits, training=False)
      score = tf.reduce_max(logits, axis=-1)
    grads = tape.gradient(score, features)
    expected = _xgradcam_numpy(features.numpy(), grads.numpy())
    ours = tf.function(ClassActivationMaps(model, "xgradcam"))(x).numpy()
    self.assertGreater(expected.max(), 0.0)
    self.assertAllClose(ours, expected, rtol=1e-4, atol=1e-5 * expected.max())


def _reference_budget(cam, size, epsilon, epsilon_low):
  """The reference code's budget of one raw CAM [h, w], with NumPy, PIL and
  matplotlib as it computes it (JiachengZ01/PART, utils.py:
  craft_weight_matrix, process_overlay, generate_weighted_eps; the
  normalisation is torchcam 0.3's `_CAM._normalize` after its ReLU)."""
  cam = np.maximum(np.asarray(cam, np.float32), np.float32(0))
  cam = cam - cam.min()
  cam = cam / (cam.max() + np.float32(1e-8))
  overlay = Image.fromarray(cam, mode="F").resize((size[1], size[0]),
                                                  resample=Image.BICUBIC)
  rgba = matplotlib.colormaps["jet"](np.asarray(overlay) ** 2)
  rgb = (255 * rgba[:, :, :3]).astype(np.double) / 255
  weights = (rgb - np.mean(rgb)) / np.std(rgb)
  weights = np.clip(weights, 1, weights.max())
  return np.where(weights > 1, np.float32(epsilon), np.float32(epsilon_low))


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

  @parameterized.parameters(((4, 4), (32, 32)), ((8, 8), (64, 64)),
                            ((7, 7), (28, 28)), ((4, 5), (32, 29)))
  def test_official_rule_equals_the_reference_rule(self, feature, image):
    # Random CAMs of two kinds, plus the edge cases: an all-zero map, a
    # constant one (both: the uniform budget, see below), one of a tiny span
    # (torchcam's 1e-8 matters there).
    rng = np.random.default_rng(sum(feature))
    cam = np.concatenate([
        rng.random((24, *feature)), rng.gamma(0.5, size=(24, *feature)),
        np.zeros((1, *feature)), np.full((1, *feature), 0.3),
        0.5 + 1e-6 * rng.random((1, *feature))]).astype(np.float32)
    expected = np.stack([_reference_budget(c, image, EPS, EPS_LOW)
                         for c in cam])
    # The reference colours a map without information jet(0) everywhere:
    # the blue channel full, red and green reduced, a budget that says
    # nothing about the image. part_tf gives it the uniform budget.
    for flat in expected[48:50]:
      self.assertAllEqual(flat, np.broadcast_to(
          np.float32([EPS_LOW, EPS_LOW, EPS]), flat.shape))
    expected[48:50] = EPS
    rule = lambda c: eps_map_from_cam(c, (*image, 3), EPS, EPS_LOW, "official")
    got = rule(tf.constant(cam)).numpy()
    self.assertAllEqual(got, expected)
    self.assertAllEqual(tf.function(rule, jit_compile=True)(cam), expected)
    # float32 arithmetic (TPUs) gives the same budgets on these maps.
    informative = np.r_[0:48, 50:len(cam)]
    self.assertAllEqual(budgets._official_budget(  # pylint: disable=protected-access
        tf.constant(cam), *image, tf.constant(EPS, tf.float32),
        tf.constant(EPS_LOW, tf.float32), tf.float32).numpy()[informative],
                        expected[informative])
    self.assertNotAllEqual(got[..., 0], got[..., 2])  # differs per channel
    self.assertBetween((got == EPS).mean(), 0.05, 0.6)

  def test_the_order_of_the_official_rule_matters(self):
    # Resizing before normalising (part_tf before #23) moves a few percent
    # of the budget elements: the test above tells the two orders apart.
    rng = np.random.default_rng(3)
    cam = rng.random((32, 4, 4)).astype(np.float32)
    expected = np.stack([_reference_budget(c, (32, 32), EPS, EPS_LOW)
                         for c in cam])
    cam01, _ = normalized_cam(tf.constant(cam), (32, 32), "bicubic")
    rgb = matplotlib.colormaps["jet"](cam01.numpy() ** 2)[..., :3]
    z = ((rgb - rgb.mean(axis=(1, 2, 3), keepdims=True))
         / rgb.std(axis=(1, 2, 3), keepdims=True))
    resized_first = np.where(z > 1, np.float32(EPS), np.float32(EPS_LOW))
    self.assertGreater((resized_first != expected).mean(), 0.01)

  @parameterized.parameters(((4, 4), (32, 32)), ((4, 5), (32, 29)),
                            ((8, 8), (64, 64)), ((7, 7), (28, 28)),
                            ((40, 40), (32, 32)), ((6, 6), (6, 6)))
  def test_resize_like_pil_equals_pillow(self, small, large):
    rng = np.random.default_rng(small[0] * large[0])
    maps = rng.normal(size=(16, *small)).astype(np.float32)
    pillow = np.stack([
        np.asarray(Image.fromarray(m, mode="F").resize(large[::-1],
                                                       Image.BICUBIC))
        for m in maps])
    self.assertAllEqual(resize_like_pil(tf.constant(maps), large), pillow)
    self.assertAllEqual(tf.function(resize_like_pil, jit_compile=True)(
        tf.constant(maps), large), pillow)
    if small[0] < large[0] and small[0] == small[1]:
      # TF's bicubic enlarges by a whole factor with the same weights, in
      # float32: equal but for the last bits, which can move a value across
      # a `jet` bin.
      tf_bicubic = tf.image.resize(maps[..., None], large, "bicubic")[..., 0]
      self.assertAllClose(tf_bicubic, pillow, atol=1e-5, rtol=0)
      self.assertNotAllEqual(tf_bicubic, pillow)

  def test_the_pictured_map_is_the_one_each_rule_thresholds(self):
    rng = np.random.default_rng(4)
    cam = rng.gamma(0.5, size=(3, 4, 4)).astype(np.float32)
    pictured = budgets.rule_map(tf.constant(cam), (32, 32), "official")
    for raw, got in zip(cam, pictured.numpy()):
      c = (raw - raw.min()) / (raw.max() - raw.min() + np.float32(1e-8))
      overlay = np.asarray(Image.fromarray(c, mode="F").resize(
          (32, 32), Image.BICUBIC))
      self.assertAllEqual(got, np.clip(overlay, 0, 1))
    self.assertAllEqual(
        budgets.rule_map(tf.constant(cam), (32, 32), "zscore"),
        normalized_cam(tf.constant(cam), (32, 32))[0])

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

  @parameterized.parameters(*MASK_RULES.names())
  def test_constant_map_falls_back_to_uniform_budget(self, rule):
    eps_map = eps_map_from_cam(tf.zeros((2, 4, 4)), (8, 8, 3), EPS, EPS_LOW,
                               rule)
    self.assertAllEqual(eps_map, tf.fill((2, 8, 8, 3), tf.constant(EPS, tf.float32)))

  @parameterized.parameters(*MASK_RULES.names())
  def test_equal_budgets_give_uniform_map(self, rule):
    cam = tf.random.stateless_uniform((2, 4, 4), [2, 2])
    eps_map = eps_map_from_cam(cam, (8, 8, 3), EPS, EPS, rule)
    self.assertAllEqual(eps_map, tf.fill((2, 8, 8, 3), tf.constant(EPS, tf.float32)))


if __name__ == "__main__":
  tf.test.main()
