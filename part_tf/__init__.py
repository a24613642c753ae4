"""part_tf: Pixel-reweighted Adversarial Training (PART) for TensorFlow/Keras.

Data flows x -> CAM (`part_tf.cam`) -> eps_map (`part_tf.cam.budgets`) ->
adversarial x (`part_tf.attacks`) -> loss (`part_tf.PARTModel` with a
`part_tf.methods` method and `part_tf.regularisers`). Every setting lives in
one config (`part_tf.config`); every component is found by name in a
registry (`part_tf.registry`). Importing `part_tf` loads nothing heavy: the
names below are imported on first use.

Example:
  import part_tf
  model = part_tf.PARTModel(classifier, method="part", epsilon=8 / 255,
                            epsilon_low=7 / 255, burn_in_epochs=20)
  model.compile(optimizer="sgd")
  model.fit(train_ds, epochs=80)
  part_tf.AutoAttack(classifier, norm="Linf", eps=8 / 255).run_standard_evaluation(
      x_test, y_test, bs=250)
"""

import importlib
import importlib.metadata

try:
  __version__ = importlib.metadata.version("part_tf")
except importlib.metadata.PackageNotFoundError:  # not installed
  __version__ = "unknown"

# Public name -> the module that defines it.
_PUBLIC = {
    "PARTModel": "part_tf.training.part_model",
    "BurnInSwitch": "part_tf.training.callbacks",
    "AutoAttack": "part_tf.autoattack",
    "Evaluator": "part_tf.evaluation",
    "SuiteConfig": "part_tf.evaluation_config",
    "TrainConfig": "part_tf.config",
    "build_model": "part_tf.models.classifiers",
    "export_classifier": "part_tf.export",
    "train": "part_tf.experiment",
}
# Public modules.
_MODULES = ("attack_catalogue", "attack_suite", "attacks", "cam", "config",
            "data", "evaluation", "methods", "models", "presets", "registry",
            "regularisers")

__all__ = sorted([*_PUBLIC, *_MODULES, "__version__"])


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  if name in _MODULES:
    return importlib.import_module(f"part_tf.{name}")
  raise AttributeError(f"module 'part_tf' has no attribute {name!r}")


def __dir__():
  return __all__
