"""x -> CAM -> eps_map: batched class activation maps and the mask rules."""

from part_tf.cam.budgets import eps_map_from_cam
from part_tf.cam.budgets import jet_colormap
from part_tf.cam.budgets import MASK_RULES
from part_tf.cam.maps import CAM_METHODS
from part_tf.cam.maps import ClassActivationMaps
from part_tf.cam.maps import normalized_cam
from part_tf.cam.maps import predicted_class_score
from part_tf.cam.maps import resize_maps
