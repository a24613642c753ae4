"""Classifiers (images in [0, 1] -> logits) with a named CAM layer."""

from part_tf.models.classifiers import build_model
from part_tf.models.classifiers import CAM_LAYER
from part_tf.models.classifiers import preact_resnet18
from part_tf.models.classifiers import resnet18
from part_tf.models.classifiers import small_cnn
from part_tf.models.classifiers import wide_resnet
from part_tf.models.classifiers import WRN_FINAL_RELU
from part_tf.registry import MODELS
