"""Image classifiers for PART: a small CNN, ResNet-18s and WideResNets.

Every model is a functional `keras.Model` that takes images in [0, 1], shape
[B, H, W, C], and returns logits. Given a per-channel mean and std, it
normalises the images with a `Normalization` layer inside the network (so
attacks and budgets live in pixel space); without them (or with mean 0 and
std 1) it has no such layer and sees the raw pixels, as the PART reference
code's models do. The layer the class activation maps are taken at is named
`CAM_LAYER` ("cam_features"): the output of the last convolutional block,
before pooling (for the WideResNets, the last residual sum before the final
BN-ReLU, where the reference code takes its CAMs).
"""

from __future__ import annotations

import functools
from typing import Sequence

from part_tf import lazy
from part_tf import registry

# Imported when a model is first built: the flags list the models without
# loading Keras (see part_tf/lazy.py).
keras = lazy.load("keras")

from part_tf.cam.layer import CAM_LAYER  # pylint: disable=g-bad-import-order
# The WideResNets' final BN-ReLU: their CAM layer in runs written before the
# CAM layer moved to the reference's (`block3`, before it).
WRN_FINAL_RELU = "final_relu"


def _normalize(inputs, mean, std):
  """`inputs` normalised by `mean` and `std` inside the model; unchanged (no
  layer at all) when neither shifts nor scales."""
  channels = inputs.shape[-1]
  mean = list(mean) if mean is not None else [0.0] * channels
  std = list(std) if std is not None else [1.0] * channels
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f"mean/std need {channels} values, got {mean} / {std}")
  if all(m == 0 for m in mean) and all(s == 1 for s in std):
    return inputs
  return keras.layers.Normalization(
      mean=mean, variance=[s * s for s in std], name="normalize")(inputs)


@registry.MODELS.register("small_cnn")
def small_cnn(input_shape: Sequence[int],
              num_classes: int,
              mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> keras.Model:
  """Two conv layers and a dense layer of 128: the quick-run model.

  Args:
    input_shape: (H, W, C) of the images.
    num_classes: number of logits.
    mean: per-channel mean of the data in [0, 1] (None: no shift).
    std: per-channel standard deviation (None: no scaling).

  Returns:
    A functional model, images in [0, 1] -> logits, whose layer `CAM_LAYER`
    holds the last convolutional features.

  Example:
    >>> model = small_cnn((28, 28, 1), 10, mean=[0.13], std=[0.31])
    >>> logits = model(images)   # images: float32 in [0, 1]
  """
  inputs = keras.Input(shape=tuple(input_shape), name="images")
  h = _normalize(inputs, mean, std)
  h = keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                          name="conv1")(h)
  h = keras.layers.MaxPooling2D(2, name="pool1")(h)
  h = keras.layers.Conv2D(64, 3, padding="same", name="conv2")(h)
  h = keras.layers.ReLU(name=CAM_LAYER)(h)
  h = keras.layers.MaxPooling2D(2, name="pool2")(h)
  h = keras.layers.Flatten(name="flatten")(h)
  h = keras.layers.Dense(128, activation="relu", name="fc1")(h)
  logits = _logits(num_classes, h)
  return keras.Model(inputs, logits, name="small_cnn")


def _logits(num_classes, h):
  # float32 logits even under mixed_float16 (Keras' advice): the softmax and
  # the attack's gradients stay in full precision at the top of the network.
  return keras.layers.Dense(num_classes, dtype="float32", name="logits")(h)


def _bn(name):
  # PyTorch BatchNorm defaults (momentum 0.1, eps 1e-5), as in the reference.
  return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _conv(filters, kernel, stride, name):
  return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                             use_bias=False, kernel_initializer="he_normal",
                             name=name)


def _preact_block(h, filters, stride, name, dropout=0.0, output_name=None):
  """Pre-activation basic block (He et al., 2016): BN-ReLU-conv, twice.

  When the shape changes, the 1x1 shortcut conv takes the activated input
  (BN-ReLU of `h`), as does the first 3x3 conv; otherwise the shortcut is the
  raw `h`. This is also the WideResNet block of the adversarial-training
  reference code, with `dropout` between the second ReLU and the second conv.
  The residual sum is named `output_name` (default "{name}_add").
  """
  pre = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(h))
  if stride != 1 or h.shape[-1] != filters:
    shortcut = _conv(filters, 1, stride, f"{name}_shortcut")(pre)
  else:
    shortcut = h
  h = _conv(filters, 3, stride, f"{name}_conv1")(pre)
  h = keras.layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2")(h))
  if dropout > 0:
    h = keras.layers.Dropout(dropout, name=f"{name}_dropout")(h)
  h = _conv(filters, 3, 1, f"{name}_conv2")(h)
  return keras.layers.Add(name=output_name or f"{name}_add")([h, shortcut])


def _torch_init():
  # PyTorch's default for Conv2d and Linear weights (kaiming_uniform_ with
  # a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def _torch_conv(filters, kernel, stride, name):
  """A bias-free conv padded as PyTorch's `padding=kernel // 2`: the same
  zeros on every side. Keras' "same" does that at stride 1; at stride 2 it
  would pad only the bottom and right, moving every window by a pixel, so
  a strided conv gets explicit padding."""
  explicit = stride > 1 and kernel > 1
  conv = keras.layers.Conv2D(filters, kernel, strides=stride,
                             padding="valid" if explicit else "same",
                             use_bias=False, kernel_initializer=_torch_init(),
                             name=name)

  def apply(h):
    if explicit:
      h = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(h)
    return conv(h)
  return apply


def _basic_block(h, filters, stride, name, output_name=None):
  """Basic block of the standard ResNet (He et al., 2016): conv-BN-ReLU,
  conv-BN, plus the shortcut (a 1x1 conv and BN where the shape changes),
  then ReLU (named `output_name`, default "{name}_out")."""
  if stride != 1 or h.shape[-1] != filters:
    shortcut = _bn(f"{name}_shortcut_bn")(
        _torch_conv(filters, 1, stride, f"{name}_shortcut")(h))
  else:
    shortcut = h
  out = keras.layers.ReLU(name=f"{name}_relu1")(
      _bn(f"{name}_bn1")(_torch_conv(filters, 3, stride, f"{name}_conv1")(h)))
  out = _bn(f"{name}_bn2")(_torch_conv(filters, 3, 1, f"{name}_conv2")(out))
  out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
  return keras.layers.ReLU(name=output_name or f"{name}_out")(out)


@registry.MODELS.register("resnet18")
def resnet18(input_shape: Sequence[int],
             num_classes: int,
             mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> keras.Model:
  """ResNet-18 of the PART reference code (`models/resnet.py`, the usual
  CIFAR ResNet-18), for 28x28 to 64x64 inputs.

  A 3x3 stem conv of 64 filters with BN-ReLU, four stages of two basic
  blocks (64, 128, 256, 512 filters; strides 1, 2, 2, 2), average pooling
  and a linear layer: 11,173,962 trainable parameters for 10 classes and
  11,271,432 for 200, the reference's counts. Convolutions have no bias and
  are padded as in PyTorch; weights start from PyTorch's default
  initialisation; batch norm has PyTorch's momentum and epsilon. The
  `CAM_LAYER` is the output of the last block (the reference's `layer4`).
  The pooling averages the whole last feature map: the reference's 4x4
  average pool for 32x32 inputs (the reference's own pool would not fit
  other sizes).

  Args:
    input_shape: (H, W, C); 28x28, 32x32 and 64x64 are the tested sizes.
    num_classes: number of logits.
    mean: per-channel mean of the data in [0, 1] (None: no shift, as in the
      reference).
    std: per-channel standard deviation (None: no scaling).

  Returns:
    A functional model, images in [0, 1] -> logits.

  Example:
    >>> model = resnet18((32, 32, 3), 10)
    >>> logits = model(images)   # images: float32 in [0, 1]
  """
  inputs = keras.Input(shape=tuple(input_shape), name="images")
  h = _normalize(inputs, mean, std)
  h = _torch_conv(64, 3, 1, "stem_conv")(h)
  h = keras.layers.ReLU(name="stem_relu")(_bn("stem_bn")(h))
  stages = [(64, 1), (128, 2), (256, 2), (512, 2)]
  for stage, (filters, stride) in enumerate(stages, start=1):
    h = _basic_block(h, filters, stride, f"stage{stage}_block1")
    h = _basic_block(h, filters, 1, f"stage{stage}_block2",
                     output_name=CAM_LAYER if stage == len(stages) else None)
  h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
  fan_in = h.shape[-1]
  logits = keras.layers.Dense(
      num_classes, dtype="float32", kernel_initializer=_torch_init(),
      bias_initializer=keras.initializers.RandomUniform(
          -fan_in ** -0.5, fan_in ** -0.5), name="logits")(h)
  return keras.Model(inputs, logits, name="resnet18")


@registry.MODELS.register("preact_resnet18")
def preact_resnet18(input_shape: Sequence[int],
                    num_classes: int,
                    mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> keras.Model:
  """Pre-activation ResNet-18 with a 3x3 stem, for 28x28 to 64x64 inputs.

  This was part_tf's `resnet18` until `resnet18` became the reference code's
  network (runs of that time rebuild this one: see
  `part_tf.run_settings.SETTINGS_VERSION`). Four stages of two pre-activation
  basic blocks (64, 128, 256, 512 filters; strides 1, 2, 2, 2), a final
  BN-ReLU (the `CAM_LAYER`), global average pooling and a linear layer:
  11,172,170 trainable parameters for 10 classes.

  Args:
    input_shape: (H, W, C); 28x28, 32x32 and 64x64 are the tested sizes.
    num_classes: number of logits.
    mean: per-channel mean of the data in [0, 1] (None: no shift).
    std: per-channel standard deviation (None: no scaling).

  Returns:
    A functional model, images in [0, 1] -> logits.

  Example:
    >>> model = preact_resnet18((32, 32, 3), 10)
  """
  inputs = keras.Input(shape=tuple(input_shape), name="images")
  h = _normalize(inputs, mean, std)
  h = _conv(64, 3, 1, "stem_conv")(h)
  for stage, (filters, stride) in enumerate(
      [(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
    h = _preact_block(h, filters, stride, f"stage{stage}_block1")
    h = _preact_block(h, filters, 1, f"stage{stage}_block2")
  h = keras.layers.ReLU(name=CAM_LAYER)(_bn("final_bn")(h))
  h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
  logits = _logits(num_classes, h)
  return keras.Model(inputs, logits, name="preact_resnet18")


def wide_resnet(input_shape: Sequence[int],
                num_classes: int,
                depth: int = 34,
                widen_factor: int = 10,
                mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None,
                dropout: float = 0.0) -> keras.Model:
  """WideResNet (Zagoruyko & Komodakis, 2016) as in adversarial training.

  The `wideresnet.py` of the TRADES/MART/PART reference code: a 3x3 stem conv
  of 16 filters, three groups of n = (depth - 4) / 6 pre-activation basic
  blocks of 16k, 32k and 64k filters (k = `widen_factor`; strides 1, 2, 2), a
  final BN-ReLU ("final_relu"), global average pooling and a linear layer.
  WRN-34-10 has about 46.2M parameters for 10 classes, WRN-28-10 about 36.5M.
  The `CAM_LAYER` is the last residual sum, before the final BN-ReLU: the
  output of the reference's `block3`, where it takes its CAMs (8x8x640 for
  32x32 inputs, k = 10). Runs written before this was so took them after
  the BN-ReLU, now `--cam_layer=final_relu`.

  Args:
    input_shape: (H, W, C); 32x32 and 64x64 are the tested sizes.
    num_classes: number of logits.
    depth: total depth, 6n + 4 (34 and 28 are the usual choices).
    widen_factor: width multiplier k of the three groups.
    mean: per-channel mean of the data in [0, 1] (None: no shift).
    std: per-channel standard deviation (None: no scaling).
    dropout: dropout rate inside each block, between the second ReLU and the
      second conv (0: no dropout layers, as in the reference's default).

  Returns:
    A functional model, images in [0, 1] -> logits, named
    "wrn{depth}_{widen_factor}".

  Raises:
    ValueError: if depth - 4 is not a positive multiple of 6.

  Example:
    >>> model = wide_resnet((32, 32, 3), 10, depth=34, widen_factor=10,
    ...                     mean=CIFAR_MEAN, std=CIFAR_STD)
    >>> logits = model(images)   # images: float32 in [0, 1]
  """
  if depth < 10 or (depth - 4) % 6 != 0:
    raise ValueError(
        f"WideResNet depth must be 6n + 4 with n >= 1 (e.g. 28, 34), "
        f"got {depth}")
  n = (depth - 4) // 6
  inputs = keras.Input(shape=tuple(input_shape), name="images")
  h = _normalize(inputs, mean, std)
  h = _conv(16, 3, 1, "stem_conv")(h)
  for group, (filters, stride) in enumerate(
      [(16 * widen_factor, 1), (32 * widen_factor, 2),
       (64 * widen_factor, 2)], start=1):
    for block in range(1, n + 1):
      last = group == 3 and block == n
      h = _preact_block(h, filters, stride if block == 1 else 1,
                        f"group{group}_block{block}", dropout=dropout,
                        output_name=CAM_LAYER if last else None)
  h = keras.layers.ReLU(name=WRN_FINAL_RELU)(_bn("final_bn")(h))
  h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
  logits = _logits(num_classes, h)
  return keras.Model(inputs, logits, name=f"wrn{depth}_{widen_factor}")


registry.MODELS.register(
    "wrn28_10", functools.partial(wide_resnet, depth=28, widen_factor=10))
registry.MODELS.register(
    "wrn34_10", functools.partial(wide_resnet, depth=34, widen_factor=10))


def build_model(name: str, input_shape, num_classes, mean=None,
                std=None) -> keras.Model:
  """Builds the classifier registered as `name` (`part_tf.registry.MODELS`;
  a builder takes `(input_shape, num_classes, mean=, std=)`)."""
  return registry.MODELS.get(name)(input_shape, num_classes, mean=mean,
                                   std=std)
