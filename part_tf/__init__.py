"""part_tf: Pixel-reweighted Adversarial Training (PART) for TensorFlow/Keras.

Data flows x -> CAM (`part_tf.cam`) -> eps_map (`part_tf.cam.budgets`) ->
adversarial x (`part_tf.attacks`) -> loss (`part_tf.training.PARTModel`).
Submodules are imported on first use, so `import part_tf` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "PARTModel": "part_tf.training",
    "BurnInSwitch": "part_tf.training",
    "build_model": "part_tf.models",
    "pgd": "part_tf.attacks",
    "export_classifier": "part_tf.export",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'part_tf' has no attribute {name!r}")
