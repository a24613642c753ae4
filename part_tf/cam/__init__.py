"""x -> CAM -> eps_map: batched class activation maps and the mask rules.

`methods.py` registers the CAM methods and `budgets.py` the mask rules
(`part_tf.registry.CAM_METHODS`, `MASK_RULES`); `layer.py` picks the layer
the maps are taken at; `maps.py` computes them (TensorFlow, tf-keras-vis),
loaded on first use of its names here.
"""

import importlib

from part_tf.cam import budgets
from part_tf.cam import methods
from part_tf.cam.budgets import eps_map_from_cam
from part_tf.cam.budgets import jet_colormap
from part_tf.cam.layer import CAM_LAYER
from part_tf.cam.layer import find_cam_layer
from part_tf.registry import CAM_METHODS
from part_tf.registry import MASK_RULES

_FROM_MAPS = ("ClassActivationMaps", "normalized_cam", "predicted_class_score",
              "resize_maps", "resize_like_pil")


def __getattr__(name):
  if name in _FROM_MAPS:
    return getattr(importlib.import_module("part_tf.cam.maps"), name)
  raise AttributeError(f"module 'part_tf.cam' has no attribute {name!r}")


__all__ = ["CAM_LAYER", "CAM_METHODS", "ClassActivationMaps", "MASK_RULES",
           "budgets", "eps_map_from_cam", "find_cam_layer", "jet_colormap",
           "methods", "normalized_cam", "predicted_class_score",
           "resize_like_pil", "resize_maps"]
