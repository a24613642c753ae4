"""Image classifiers for PART: a small CNN for quick runs and ResNet-18.

Every model is a functional `keras.Model` that takes images in [0, 1], shape
[B, H, W, C], normalises them with a `Normalization` layer inside the network
(so attacks and budgets live in pixel space), and returns logits. The output
of the last convolutional block, before pooling, is the layer named
`CAM_LAYER` ("cam_features"): the layer the class activation maps are taken at.
"""

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


def _preact_block(h, filters, stride, name):
  """Pre-activation basic block (He et al., 2016): BN-ReLU-conv, twice."""
  pre = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(h))
  if stride != 1 or h.shape[-1] != filters:
    shortcut = _conv(filters, 1, stride, f"{name}_shortcut")(pre)
  else:
    shortcut = h
  h = _conv(filters, 3, stride, f"{name}_conv1")(pre)
  h = keras.layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2")(h))
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


MODELS = {"small_cnn": small_cnn, "resnet18": resnet18}
MODEL_NAMES = tuple(sorted(MODELS))


def build_model(name: str, input_shape, num_classes, mean=None,
                std=None) -> keras.Model:
  """Builds a classifier by name (see `MODEL_NAMES`)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
  return MODELS[name](input_shape, num_classes, mean=mean, std=std)
