"""The CAM methods, registered by name (`part_tf.registry.CAM_METHODS`).

A CAM method is `(classifier, layer_name) -> maps`, where `maps(x)` gives
raw maps [B, h, w] for the predicted class, the model in inference mode:

  gradcam_plus_plus  GradCAM++ (Chattopadhay et al. 2018), from tf-keras-vis.
  gradcam            Grad-CAM (Selvaraju et al. 2017), from tf-keras-vis.
  layercam           LayerCAM (Jiang et al. 2021), from tf-keras-vis.
  xgradcam           XGrad-CAM (Fu et al. 2020), as in pytorch-grad-cam.

Importing this module imports neither TensorFlow nor tf-keras-vis (the
implementations are in `maps.py`).
"""

from part_tf import lazy
from part_tf import registry

maps = lazy.load("part_tf.cam.maps")


@registry.CAM_METHODS.register("gradcam_plus_plus")
def gradcam_plus_plus(classifier, layer_name):
  from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus  # pylint: disable=g-import-not-at-top
  return maps.TfKerasVisCam(GradcamPlusPlus, classifier, layer_name)


@registry.CAM_METHODS.register("gradcam")
def gradcam(classifier, layer_name):
  return maps.TfKerasVisCam(maps.Gradcam, classifier, layer_name)


@registry.CAM_METHODS.register("layercam")
def layercam(classifier, layer_name):
  return maps.TfKerasVisCam(maps.Layercam, classifier, layer_name)


@registry.CAM_METHODS.register("xgradcam")
def xgradcam(classifier, layer_name):
  return maps.XGradCam(classifier, layer_name)
