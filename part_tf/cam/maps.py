"""Class activation maps for a whole batch, inside the compiled train step.

x -> CAM: GradCAM++ from tf-keras-vis for the predicted class, the model in
inference mode, at the layer named `CAM_LAYER` (the last convolutional block,
before pooling). tf-keras-vis is called the way that traces on Keras 3
(`expand_cam=False, normalize_cam=False`, a score written with `tf.gather`, no
`model_modifier`, so the maps always see the live weights); resizing to the
image size and normalising are done here in TensorFlow, batched.
"""

import numpy as np
import tensorflow as tf
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

from part_tf.models import CAM_LAYER

CAM_METHODS = ("gradcam_plus_plus",)
RESIZE_METHODS = ("bilinear", "bicubic")


def predicted_class_score(logits: tf.Tensor) -> tf.Tensor:
  """Logit of the arg-max class, per example, with its value shifted to 0.

  The gradient is the logit's gradient. The value is shifted because GradCAM++
  in tf-keras-vis scales every map by `exp(score)`: a per-image constant that
  min-max normalisation removes, but that overflows float32 for logits above
  ~88 and would turn the map into NaNs.
  """
  score = tf.gather(logits, tf.argmax(logits, axis=-1), batch_dims=1)
  return score - tf.stop_gradient(score)


class ClassActivationMaps:
  """Batched, traceable CAMs of a functional classifier.

  Args:
    classifier: functional `keras.Model`, images in [0, 1] -> logits.
    method: one of `CAM_METHODS`.
    layer_name: name of the layer to take the maps at.

  Example:
    >>> cams = ClassActivationMaps(model)
    >>> raw = cams(x)                      # [B, h, w] at the feature resolution
    >>> cam01, ok = normalized_cam(raw, x.shape[1:3])
  """

  def __init__(self, classifier, method: str = "gradcam_plus_plus",
               layer_name: str = CAM_LAYER):
    if method not in CAM_METHODS:
      raise ValueError(f"unknown CAM method {method!r}; choose one of "
                       f"{CAM_METHODS}")
    try:
      classifier.get_layer(layer_name)
    except ValueError:
      raise ValueError(f"model {classifier.name!r} has no layer named "
                       f"{layer_name!r} to take class activation maps at"
                       ) from None
    self.method = method
    self.layer_name = layer_name
    # clone=False and no model_modifier: the visualiser uses the live model.
    self._visualizer = GradcamPlusPlus(classifier, clone=False)

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """Raw (ReLU'd, unnormalised) maps, shape [B, h, w], no gradient."""
    cam = self._visualizer(
        predicted_class_score, x,
        penultimate_layer=self.layer_name,
        seek_penultimate_conv_layer=False,
        training=False, expand_cam=False, normalize_cam=False)
    return tf.stop_gradient(tf.cast(cam, tf.float32))


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
