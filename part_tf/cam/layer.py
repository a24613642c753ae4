"""Which layer of a classifier its class activation maps are taken at.

A classifier may name the layer: part_tf's models call it `CAM_LAYER`
("cam_features"). Without such a layer, `find_cam_layer` takes the last
layer with a spatial (4-D) output that is not a pooling (or padding) layer,
as one picks it by hand in Keras' Grad-CAM example, so that a
`keras.applications` model works as it is.

Importing this module imports neither TensorFlow nor Keras.
"""

import warnings

from part_tf import lazy

keras = lazy.load("keras")

CAM_LAYER = "cam_features"


def _not_features():
  """Layers whose maps are not features at the image's positions: pooling,
  and padding (its border is constant, so the CAM is 0 there, and the maps
  are shifted against the image)."""
  return (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
          keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
          keras.layers.ZeroPadding2D)


def _spatial_shape(layer):
  """(h, w) of a layer with a 4-D output [B, h, w, C], else None."""
  try:
    shape = layer.output.shape
  except (AttributeError, ValueError):
    return None
  if len(shape) != 4:
    return None
  return shape[1], shape[2]


def _spatial_layers(classifier):
  """The layers with a spatial output that are not pooling, padding or
  inputs."""
  return [layer for layer in classifier.layers
          if _spatial_shape(layer) is not None
          and not isinstance(layer, _not_features())
          and not isinstance(layer, keras.layers.InputLayer)]


def find_cam_layer(classifier) -> str:
  """The layer to take a classifier's CAMs at: the one named `CAM_LAYER`
  if there is one, else the last layer with a spatial output that is not a
  pooling or padding layer.

  Raises:
    ValueError: the classifier has no such layer (one line).
  """
  if CAM_LAYER in [layer.name for layer in classifier.layers]:
    return CAM_LAYER
  spatial = _spatial_layers(classifier)
  if not spatial:
    raise ValueError(
        f"model {classifier.name!r} has no layer with a spatial (4-D) "
        "output to take class activation maps at: name one with cam_layer")
  return spatial[-1].name


def warn_if_constant(classifier, layer_name):
  """A map of 1x1 is constant: the budget is then uniform and PART trains
  exactly as its base method. Says so, naming a layer with larger maps."""
  size = _spatial_shape(classifier.get_layer(layer_name))
  if size is None or size[0] is None or size[0] * size[1] != 1:
    return
  larger = [layer.name for layer in _spatial_layers(classifier)
            if _spatial_shape(layer)[0] not in (None, 1)]
  hint = (f"; the last layer with larger maps is {larger[-1]!r}: pass "
          f"cam_layer={larger[-1]!r}") if larger else ""
  warnings.warn(
      f"the CAM layer {layer_name!r} of {classifier.name!r} has 1x1 maps at "
      f"this input size: every CAM is constant, so the budget stays uniform "
      f"and PART trains exactly as its base method{hint}", stacklevel=3)
