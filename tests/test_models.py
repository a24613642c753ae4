"""Models: sizes, input normalisation inside the model, the named CAM layer,
and the reference code's ResNet-18 against an independent implementation."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from part_tf.models import build_model
from part_tf.cam import CAM_LAYER
from part_tf.models import wide_resnet
from part_tf.models.classifiers import WRN_FINAL_RELU


def _trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _reference_resnet18(model, x):
  """The forward pass of the reference's `models/resnet.py` ResNet-18 in
  inference mode, written with tf.nn ops from its description (PyTorch's
  symmetric `padding=k // 2`, conv-BN-ReLU / conv-BN basic blocks with 1x1
  conv + BN shortcuts where the shape changes, F.avg_pool2d(out, 4), a
  linear layer), reading `model`'s weights by layer name."""
  def conv(h, name, stride):
    kernel = model.get_layer(name).kernel
    pad = kernel.shape[0] // 2
    h = tf.pad(h, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.nn.conv2d(h, kernel, stride, "VALID")

  def bn(h, name):
    layer = model.get_layer(name)
    return tf.nn.batch_normalization(h, layer.moving_mean,
                                     layer.moving_variance, layer.beta,
                                     layer.gamma, 1e-5)

  h = tf.nn.relu(bn(conv(x, "stem_conv", 1), "stem_bn"))
  channels = 64
  for stage, (filters, stride) in enumerate(
      [(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
    for block, block_stride in ((1, stride), (2, 1)):
      name = f"stage{stage}_block{block}"
      out = tf.nn.relu(bn(conv(h, f"{name}_conv1", block_stride),
                          f"{name}_bn1"))
      out = bn(conv(out, f"{name}_conv2", 1), f"{name}_bn2")
      shortcut = h
      if block_stride != 1 or channels != filters:
        shortcut = bn(conv(h, f"{name}_shortcut", block_stride),
                      f"{name}_shortcut_bn")
      h = tf.nn.relu(out + shortcut)
      channels = filters
  h = tf.nn.avg_pool2d(h, 4, 4, "VALID")
  h = tf.reshape(h, [h.shape[0], -1])
  dense = model.get_layer("logits")
  return tf.matmul(h, dense.kernel) + dense.bias


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
      ("preact_resnet18", (28, 28, 1), 10, (4, 4, 512)),
      ("preact_resnet18", (64, 64, 3), 200, (8, 8, 512)),
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
      self.assertEqual(_trainable(model), trainable)
      self.assertBetween(model.count_params(), low, high)

  @parameterized.parameters(((32, 32, 3), 10, 11_173_962),
                            ((64, 64, 3), 200, 11_271_432))
  def test_resnet18_has_the_reference_size(self, shape, classes, expected):
    # The trainable parameters of the reference's ResNet18(num_classes)
    # (models/resnet.py): 11,173,962 for 10 classes, 11,271,432 for 200.
    self.assertEqual(_trainable(build_model("resnet18", shape, classes)),
                     expected)

  def test_preact_resnet18_keeps_its_size(self):
    # The pre-activation network that `resnet18` was before (its runs
    # rebuild this one): one BN more than the reference's, no shortcut BNs.
    self.assertEqual(_trainable(build_model("preact_resnet18", (32, 32, 3),
                                            10)), 11_172_170)

  @parameterized.parameters(((32, 32, 3),), ((33, 33, 3),))
  def test_resnet18_computes_the_reference_network(self, shape):
    # Inference-mode logits equal the reference's network written with
    # tf.nn ops, with random batch-norm statistics and affine parameters so
    # that every BN counts. Keras' "same" padding of the strided convs
    # (bottom/right only) would fail this; 33x33 checks odd sizes too (the
    # reference's 4x4 pool then sees a 5x5 map: not compared past 32).
    keras.utils.set_random_seed(1)
    model = build_model("resnet18", shape, 10)
    rng = np.random.default_rng(0)
    for layer in model.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        n = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        layer.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
        layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2, n).astype(np.float32))
    x = tf.constant(rng.uniform(size=(3, *shape)).astype(np.float32))
    if shape[0] == 32:
      self.assertAllClose(model(x, training=False),
                          _reference_resnet18(model, x), atol=1e-4, rtol=1e-4)
    else:  # the strided convs' windows, before the pool
      trunk = keras.Model(model.inputs,
                          model.get_layer("stage2_block1_conv1").output)
      kernel = model.get_layer("stage2_block1_conv1").kernel
      stage1 = keras.Model(model.inputs,
                           model.get_layer("stage1_block2_out").output)(x)
      expected = tf.nn.conv2d(
          tf.pad(stage1, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, 2,
          "VALID")
      self.assertEqual(trunk(x).shape[1:3], (17, 17))
      self.assertAllClose(trunk(x), expected, atol=1e-4, rtol=1e-4)

  def test_resnet18_starts_from_pytorch_initialisation(self):
    # PyTorch's Conv2d / Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    # (kaiming_uniform_ with a = sqrt(5)), the bias too; BN gamma 1, beta 0.
    keras.utils.set_random_seed(2)
    model = build_model("resnet18", (32, 32, 3), 10)
    for name in ("stem_conv", "stage3_block1_conv1", "stage4_block1_shortcut",
                 "logits"):
      kernel = model.get_layer(name).kernel.numpy()
      bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
      with self.subTest(layer=name):
        self.assertLessEqual(np.abs(kernel).max(), bound)
        # A uniform draw's std is bound / sqrt(3).
        self.assertAllClose(kernel.std(), bound / np.sqrt(3), rtol=0.08)
    bias = model.get_layer("logits").bias.numpy()
    self.assertLessEqual(np.abs(bias).max(), 1 / np.sqrt(512))
    self.assertGreater(np.abs(bias).max(), 0)
    bn = model.get_layer("stage2_block1_bn1")
    self.assertAllEqual(bn.gamma, np.ones(128))
    self.assertAllEqual(bn.beta, np.zeros(128))
    self.assertAllClose((bn.momentum, bn.epsilon), (0.9, 1e-5))

  def test_resnet18_cam_layer_is_the_reference_layer4(self):
    # CAM_LAYER is the output of the last basic block (after its ReLU), the
    # reference's `layer4`; the pool reads it directly.
    model = build_model("resnet18", (32, 32, 3), 10)
    layer = model.get_layer(CAM_LAYER)
    self.assertIsInstance(layer, keras.layers.ReLU)
    self.assertEqual(layer.input.name, model.get_layer(
        "stage4_block2_add").output.name)
    self.assertIs(model.get_layer("pool").input, layer.output)

  def test_wide_resnet_cam_layer_is_the_reference_block3(self):
    # The reference takes WRN CAMs at `block3`: the last residual sum, before
    # the final BN-ReLU (which runs of settings version 1 used, now
    # --cam_layer=final_relu).
    model = wide_resnet((16, 16, 3), 5, depth=10, widen_factor=1)
    cam = model.get_layer(CAM_LAYER)
    self.assertIsInstance(cam, keras.layers.Add)
    self.assertEqual(cam.name, CAM_LAYER)
    self.assertIs(model.get_layer("final_bn").input, cam.output)
    x = tf.random.stateless_uniform((2, 16, 16, 3), [0, 5])
    features = keras.Model(model.inputs, [cam.output, model.get_layer(
        WRN_FINAL_RELU).output])(x, training=False)
    bn = model.get_layer("final_bn")
    self.assertAllClose(features[1], tf.nn.relu(bn(features[0],
                                                   training=False)))
    self.assertEqual(tuple(features[0].shape[1:]), (4, 4, 64))

  @parameterized.parameters("resnet18", "preact_resnet18", "small_cnn")
  def test_no_normalisation_layer_without_statistics(self, name):
    # The reference's pipeline feeds raw [0, 1] pixels: without mean/std (or
    # with mean 0 and std 1) the model has no normalisation layer at all.
    for mean, std in ((None, None), ([0.0] * 3, [1.0] * 3)):
      model = build_model(name, (32, 32, 3), 10, mean=mean, std=std)
      self.assertEmpty([l for l in model.layers
                        if isinstance(l, keras.layers.Normalization)])
    model = build_model(name, (32, 32, 3), 10, mean=[0.5] * 3, std=[0.2] * 3)
    self.assertLen([l for l in model.layers
                    if isinstance(l, keras.layers.Normalization)], 1)

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
