"""Image classifiers for PART: a small CNN, ResNet-18 and WideResNets.

Every model is a functional `keras.Model` that takes images in [0, 1], shape
[B, H, W, C], normalises them with a `Normalization` layer inside the network
(so attacks and budgets live in pixel space), and returns logits. The output
of the last convolutional block, before pooling, is the layer named
`CAM_LAYER` ("cam_features"): the layer the class activation maps are taken at.
"""

import functools
from typing import Sequence

import keras

CAM_LAYER = "cam_features"


def _normalize(inputs, mean, std):
  channels = inputs.shape[-1]
  mean = list(mean) if mean is not None else [0.0] * channels
  std = list(std) if std is not None else [1.0] * channels
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f"mean/std need {channels} values, got {mean} / {std}")
  return keras.layers.Normalization(
      mean=mean, variance=[s * s for s in std], name="normalize")(inputs)


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


def _preact_block(h, filters, stride, name, dropout=0.0):
  """Pre-activation basic block (He et al., 2016): BN-ReLU-conv, twice.

  When the shape changes, the 1x1 shortcut conv takes the activated input
  (BN-ReLU of `h`), as does the first 3x3 conv; otherwise the shortcut is the
  raw `h`. This is also the WideResNet block of the adversarial-training
  reference code, with `dropout` between the second ReLU and the second conv.
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
  return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def resnet18(input_shape: Sequence[int],
             num_classes: int,
             mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> keras.Model:
  """Pre-activation ResNet-18 with a 3x3 stem, for 28x28 to 64x64 inputs.

  Four stages of two basic blocks (64, 128, 256, 512 filters; strides 1, 2, 2,
  2), a final BN-ReLU (the `CAM_LAYER`), global average pooling and a linear
  layer: about 11.2M parameters for 10 classes.

  Args:
    input_shape: (H, W, C); 28x28, 32x32 and 64x64 are the tested sizes.
    num_classes: number of logits.
    mean: per-channel mean of the data in [0, 1] (None: no shift).
    std: per-channel standard deviation (None: no scaling).

  Returns:
    A functional model, images in [0, 1] -> logits.

  Example:
    >>> model = resnet18((32, 32, 3), 10, mean=CIFAR_MEAN, std=CIFAR_STD)
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
  return keras.Model(inputs, logits, name="resnet18")


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
  final BN-ReLU (the `CAM_LAYER`), global average pooling and a linear layer.
  WRN-34-10 has about 46.2M parameters for 10 classes, WRN-28-10 about 36.5M.
  The CAM features are 8x8x640 for 32x32 inputs (k = 10).

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
      h = _preact_block(h, filters, stride if block == 1 else 1,
                        f"group{group}_block{block}", dropout=dropout)
  h = keras.layers.ReLU(name=CAM_LAYER)(_bn("final_bn")(h))
  h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
  logits = _logits(num_classes, h)
  return keras.Model(inputs, logits, name=f"wrn{depth}_{widen_factor}")


MODELS = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "wrn28_10": functools.partial(wide_resnet, depth=28, widen_factor=10),
    "wrn34_10": functools.partial(wide_resnet, depth=34, widen_factor=10),
}
MODEL_NAMES = tuple(sorted(MODELS))


def build_model(name: str, input_shape, num_classes, mean=None,
                std=None) -> keras.Model:
  """Builds a classifier by name (see `MODEL_NAMES`)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
  return MODELS[name](input_shape, num_classes, mean=mean, std=std)
