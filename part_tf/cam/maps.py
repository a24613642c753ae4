"""Class activation maps for a whole batch, inside the compiled train step.

x -> CAM for the predicted class, the model in inference mode, at the layer
`layer.find_cam_layer` picks (the last convolutional block, before pooling)
unless another layer is named; the methods are registered in `methods.py`:

  gradcam_plus_plus  GradCAM++ (Chattopadhay et al. 2018), from tf-keras-vis.
  gradcam            Grad-CAM (Selvaraju et al. 2017), from tf-keras-vis.
  layercam           LayerCAM (Jiang et al. 2021), from tf-keras-vis.
  xgradcam           XGrad-CAM (Fu et al. 2020), written here as in
                     pytorch-grad-cam: w_k = sum_ij A_k * dS/dA_k over
                     (sum_ij A_k + 1e-7), cam = ReLU(sum_k w_k A_k).

tf-keras-vis is called the way that traces on Keras 3 (`expand_cam=False,
normalize_cam=False`, a score written with `tf.gather`, no `model_modifier`, so
the maps always see the live weights, and no AutoGraph conversion of its code);
Grad-CAM's and LayerCAM's channel sums, which tf-keras-vis 0.8.7 writes with
NumPy, are done in TensorFlow. Resizing to the image size and normalising are
done here in TensorFlow, batched.
"""

import keras
import numpy as np
import tensorflow as tf
from tf_keras_vis.gradcam import Gradcam as _TfKerasVisGradcam
from tf_keras_vis.layercam import Layercam as _TfKerasVisLayercam

from part_tf import registry
from part_tf.cam.layer import find_cam_layer
from part_tf.cam.layer import warn_if_constant

RESIZE_METHODS = ("bilinear", "bicubic")


def predicted_class_score(logits: tf.Tensor) -> tf.Tensor:
  """Logit of the arg-max class, per example, with its value shifted to 0.

  The gradient is the logit's gradient. The value is shifted because GradCAM++
  in tf-keras-vis scales every map by `exp(score)`: a per-image constant that
  min-max normalisation removes, but that overflows float32 for logits above
  ~88 and would turn the map into NaNs. Grad-CAM and LayerCAM use only the
  gradient, so the shift changes nothing for them.
  """
  score = tf.gather(logits, tf.argmax(logits, axis=-1), batch_dims=1)
  return score - tf.stop_gradient(score)


def batch_score(logits: tf.Tensor) -> tf.Tensor:
  """The sum of `predicted_class_score` over the batch: a scalar, valued 0.

  This is the score handed to tf-keras-vis. Its gradient with respect to each
  image's features is that image's own score gradient (in inference mode no
  image depends on another), and `exp(score)`, which GradCAM++ multiplies in,
  is exactly 1 as it is per image. A per-image score of shape [B] would also
  do, but tf-keras-vis 0.8.7 reshapes it to `score.shape + (1, 1, 1)`, which
  fails when the batch size is unknown at trace time (`model.fit` on NumPy
  arrays or on a `tf.data` pipeline whose last batch is partial).
  """
  return tf.reduce_sum(predicted_class_score(logits))


def _spatial_axes(t):
  return tuple(range(1, t.shape.rank - 1))


class Gradcam(_TfKerasVisGradcam):
  """tf-keras-vis' Grad-CAM with its channel sum in TensorFlow (it is NumPy in
  0.8.7, which fails on symbolic tensors): same weights, mean of the gradients
  over space, and the same modifiers."""

  def _calculate_cam(self, grads, penultimate_output, gradient_modifier,
                     activation_modifier):
    if gradient_modifier is not None:
      grads = gradient_modifier(grads)
    weights = tf.reduce_mean(grads, axis=_spatial_axes(grads), keepdims=True)
    cam = tf.reduce_sum(penultimate_output * weights, axis=-1)
    if activation_modifier is not None:
      cam = activation_modifier(cam)
    return cam


class Layercam(_TfKerasVisLayercam):
  """tf-keras-vis' LayerCAM with its channel sum in TensorFlow: the positive
  gradients (its default `gradient_modifier`) weight the features pixel-wise."""

  def _calculate_cam(self, grads, penultimate_output, gradient_modifier,
                     activation_modifier):
    if gradient_modifier is not None:
      grads = gradient_modifier(grads)
    cam = tf.reduce_sum(penultimate_output * grads, axis=-1)
    if activation_modifier is not None:
      cam = activation_modifier(cam)
    return cam


class TfKerasVisCam:
  """A tf-keras-vis visualiser called the way that traces on Keras 3.

  Args:
    visualizer_class: GradcamPlusPlus, `Gradcam` or `Layercam`.
    classifier: the classifier (live: no clone, no model_modifier, so the
      maps always see the current weights).
    layer_name: the layer the maps are taken at.
  """

  def __init__(self, visualizer_class, classifier, layer_name: str):
    self.layer_name = layer_name
    # tf-keras-vis multiplies exp(score) into the layer's gradients: the
    # score must have the layer's dtype (bfloat16 under mixed_bfloat16).
    feature_dtype = classifier.get_layer(layer_name).compute_dtype
    self._score = lambda logits: tf.cast(batch_score(logits), feature_dtype)
    # Not converted by AutoGraph: the library's control flow is plain Python
    # (and LayerCAM forwards its arguments with `locals()`, which AutoGraph
    # fills with its own variables).
    self._visualizer = tf.autograph.experimental.do_not_convert(
        visualizer_class(classifier, clone=False))

  def __call__(self, x):
    return self._visualizer(
        self._score, x, penultimate_layer=self.layer_name,
        seek_penultimate_conv_layer=False, training=False, expand_cam=False,
        normalize_cam=False)


class XGradCam:
  """XGrad-CAM (Fu et al. 2020) as in pytorch-grad-cam: w_k = sum_ij A_k *
  dS/dA_k over (sum_ij A_k + 1e-7), cam = ReLU(sum_k w_k A_k).

  Args:
    classifier: the classifier.
    layer_name: the layer the maps are taken at.
  """

  def __init__(self, classifier, layer_name: str):
    # Shares the classifier's layers, so it always sees the live weights.
    self._features = keras.Model(
        classifier.inputs,
        [classifier.output, classifier.get_layer(layer_name).output])

  def __call__(self, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x)
      logits, features = self._features(x, training=False)
      score = batch_score(logits)
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    features = tf.cast(features, tf.float32)
    axes = _spatial_axes(features)
    weights = (tf.reduce_sum(grads * features, axis=axes, keepdims=True)
               / (tf.reduce_sum(features, axis=axes, keepdims=True) + 1e-7))
    return tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))


class ClassActivationMaps:
  """Batched, traceable CAMs of a functional classifier.

  Args:
    classifier: functional `keras.Model`, images in [0, 1] -> logits.
    method: a registered CAM method (`part_tf.registry.CAM_METHODS`).
    layer_name: the layer to take the maps at (None: `find_cam_layer`).

  Example:
    >>> cams = ClassActivationMaps(model)
    >>> raw = cams(x)                      # [B, h, w] at the feature resolution
    >>> cam01, ok = normalized_cam(raw, x.shape[1:3])
  """

  def __init__(self, classifier, method: str = "gradcam_plus_plus",
               layer_name: str | None = None):
    from part_tf import components  # pylint: disable=g-import-not-at-top,unused-import
    make = registry.CAM_METHODS.get(method)
    if layer_name is None:
      layer_name = find_cam_layer(classifier)
    try:
      classifier.get_layer(layer_name)
    except ValueError:
      raise ValueError(f"model {classifier.name!r} has no layer named "
                       f"{layer_name!r} to take class activation maps at"
                       ) from None
    warn_if_constant(classifier, layer_name)
    self.method = method
    self.layer_name = layer_name
    self._maps = make(classifier, layer_name)

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """Raw (ReLU'd, unnormalised) maps, shape [B, h, w], no gradient."""
    return tf.stop_gradient(tf.cast(self._maps(x), tf.float32))


def _interpolation_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
  """The [n_out, n_in] matrix that `tf.image.resize` applies along one axis.

  Resizing is linear and separable, so resizing an identity image along one
  axis yields its weights. Computed eagerly once per shape at trace time.
  """
  with tf.init_scope():
    eye = tf.eye(n_in, dtype=tf.float32)[:, :, None]          # [n_in, n_in, 1]
    return tf.image.resize(eye, [n_out, n_in], method=method)[:, :, 0].numpy()


def resize_maps(cam: tf.Tensor, size, method: str = "bilinear") -> tf.Tensor:
  """Resizes maps [B, h, w] to [B, H, W] like `tf.image.resize`.

  Bicubic is applied as two small matrix products with `tf.image.resize`'s own
  weights, because the bicubic resize op does not compile under XLA.
  """
  if method not in RESIZE_METHODS:
    raise ValueError(f"unknown resize method {method!r}; choose one of "
                     f"{RESIZE_METHODS}")
  height, width = int(size[0]), int(size[1])
  if method == "bilinear":
    return tf.image.resize(cam[..., None], [height, width], "bilinear")[..., 0]
  rows = _interpolation_matrix(cam.shape[1], height, method)
  cols = _interpolation_matrix(cam.shape[2], width, method)
  return tf.einsum("Hh,bhw,Ww->bHW", rows, cam, cols)


def pil_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """The [n_out, n_in] float64 weights of PIL's bicubic resize along one axis.

  Pillow's `Image.resize(size, Image.BICUBIC)` (its resampling of float 'F'
  images) weighs the input samples around output position `o`, centred at
  `c = (o + 0.5) * n_in / n_out`, with the Keys cubic kernel of a = -0.5
  at `(i + 0.5 - c) / s`, `s = max(1, n_in / n_out)` (so it widens when
  shrinking), over the inputs `i` in [int(c - 2s + 0.5), int(c + 2s + 0.5))
  that lie inside the image, and divides the weights by their sum (near the
  border the taps outside the image are dropped). `tf.image.resize`'s
  bicubic enlarges with the same weights but sums in float32, so its values
  differ from PIL's in the last bits, and it does not compile under XLA.
  Written from that description (PIL has no matrix to read off);
  tests/test_cam.py checks the resize against Pillow itself.
  """
  scale = n_in / n_out
  stretch = max(scale, 1.0)
  support = 2.0 * stretch
  weights = np.zeros((n_out, n_in))
  for o in range(n_out):
    centre = (o + 0.5) * scale
    first = max(int(centre - support + 0.5), 0)
    stop = min(int(centre + support + 0.5), n_in)
    taps = np.abs((np.arange(first, stop) - centre + 0.5) * (1.0 / stretch))
    kernel = np.where(
        taps < 1.0, (1.5 * taps - 2.5) * taps * taps + 1.0,
        np.where(taps < 2.0, -0.5 * (((taps - 5.0) * taps + 8.0) * taps - 4.0),
                 0.0))
    total = 0.0
    for value in kernel:  # in order, as PIL sums them
      total += value
    weights[o, first:stop] = kernel / total if total else kernel
  return weights


def resize_like_pil(cam: tf.Tensor, size, dtype=None) -> tf.Tensor:
  """Resizes float32 maps [B, h, w] to [B, H, W] as PIL resizes an 'F' image
  with `Image.BICUBIC`: the width first, the result rounded to float32, then
  the height, rounded to float32 (PIL sums in double precision, keeps its
  intermediate image in float32).

  Two matrix products with `pil_bicubic_matrix`'s weights, so that it
  compiles under XLA. In float64 (the default) the values equal Pillow's
  but for the rounding of an exact tie, rare; `dtype=tf.float32` (for a
  TPU, which has no float64) rounds the sums to float32 too.
  """
  dtype = dtype or tf.float64
  height, width = int(size[0]), int(size[1])
  rows = tf.constant(pil_bicubic_matrix(cam.shape[1], height), dtype)
  cols = tf.constant(pil_bicubic_matrix(cam.shape[2], width), dtype)
  wide = tf.einsum("bhw,Ww->bhW", tf.cast(cam, dtype), cols)
  wide = tf.cast(tf.cast(wide, tf.float32), dtype)
  return tf.cast(tf.einsum("Hh,bhW->bHW", rows, wide), tf.float32)


def normalized_cam(cam: tf.Tensor, size, method: str = "bilinear"):
  """Resize to the image size, ReLU, min-max normalise each map to [0, 1].

  Returns:
    (maps in [0, 1] of shape [B, H, W], bool [B] saying which maps are
    informative: a constant map, e.g. all zeros, is not and comes back as 0).
  """
  cam = tf.nn.relu(resize_maps(cam, size, method))
  low = tf.reduce_min(cam, axis=[1, 2], keepdims=True)
  span = tf.reduce_max(cam, axis=[1, 2], keepdims=True) - low
  informative = span > 1e-12
  cam01 = tf.where(informative, (cam - low) / tf.where(informative, span, 1.0),
                   0.0)
  return cam01, tf.reshape(informative, [-1])
