"""What a run folder's `config.json` holds, and how the files of earlier
versions are read.

`config.json` records the settings a run uses (`TrainConfig.to_flat`, less
`model_dir`: the folder is the run, whatever path names it) and what they
resolved to on this machine (strategy, input mode, validation block,
dataset statistics). A resumed run must match it, except for the settings
that may change on a resume (`TrainConfig.per_machine_settings`).

A file written by an earlier version is read (`upgrade`) as this version
would have written it for the same run, so that the same command resumes it.
"""

import os

from part_tf import config as config_lib
from part_tf.cam.layer import CAM_LAYER
from part_tf.models.classifiers import WRN_FINAL_RELU

# The version of the settings that `config.json` records ("settings_version";
# files without it are version 1). Version 2 (issue #23) changed what some
# settings build, and `upgrade` reads a version-1 file with the values that
# build what that run did:
# - `resnet18` was the pre-activation network, now `preact_resnet18`;
# - cifar10, cifar100, svhn_cropped and tiny_imagenet were normalised by
#   their statistics inside the model (now only with mean/std);
# - the WideResNets' `cam_features` was their final BN-ReLU, now
#   `final_relu` (their `cam_features` is now the reference's `block3`).
# Version 3 (issue #21) records the CAM layer as None when it is the model's
# own `cam_features` (the default finds it).
SETTINGS_VERSION = 3

# Settings added after runs were first written, with the value that
# reproduces what those runs did where it is not today's default.
_EARLIER_VALUES = {
    # Before the validation split, the best epoch was chosen on the first
    # 512 test images (see `upgrade`).
    "validation_split": "0",
    # One clean pass per TRADES step, as before #23.
    "trades_clean_passes": 1,
    "consistency_views": "crop_flip",
}



def settings(config: config_lib.TrainConfig) -> dict:
  """The run's settings as `config.json` records them (JSON-able)."""
  values = config.to_flat()
  del values["model_dir"]
  for name in ("data_dir", "manual_dir"):
    if values.get(name) is not None:
      values[name] = os.path.abspath(os.path.expanduser(values[name]))
  values["settings_version"] = SETTINGS_VERSION
  return values


def upgrade(old: dict | None) -> None:
  """Reads a `config.json` of an earlier version as this version would write
  it (in place)."""
  if old is None:
    return
  if "validation_split" not in old and old.get("eval_every") == 0 and (
      old.get("eval_subset") == 512):
    # Evaluated after the last epoch only, on the first 512 test images:
    # what "auto" and the default eval_subset do now (without keeping that
    # one epoch as "best"), so the same command resumes it.
    old.update(validation_split="auto", eval_subset=None)
  for name, value in _EARLIER_VALUES.items():
    old.setdefault(name, value)
  if old.get("settings_version", 1) < 3:
    # A setting that did not exist yet did what its default does now.
    for name, s in config_lib.all_settings().items():
      default = s.flag_default
      old.setdefault(name, list(default) if isinstance(default, tuple)
                     else default)
  if isinstance(old.get("mixed_precision"), bool):
    old["mixed_precision"] = ("mixed_float16" if old["mixed_precision"]
                              else "none")
  version = old.get("settings_version", 1)
  if version < 2:
    _to_version_2(old)
  if version < 3 and old.get("cam_layer") == CAM_LAYER:
    old["cam_layer"] = None
  old["settings_version"] = SETTINGS_VERSION


def _to_version_2(old: dict) -> None:
  """A version-1 `config.json` in the version-2 names of what it built."""
  from part_tf.data.specs import STATISTICS  # pylint: disable=g-import-not-at-top
  for name in ("model", "act_natural_model"):
    if old.get(name) == "resnet18":
      old[name] = "preact_resnet18"
  if (old.get("model", "").startswith("wrn")
      and old.get("cam_layer") in (CAM_LAYER, None)):
    old["cam_layer"] = WRN_FINAL_RELU
  stats = STATISTICS.get(old.get("dataset"))
  if stats is not None:  # (mean/std applied to tfds:NAME only then)
    recorded = old.get("dataset_spec") or {}
    for i, name in enumerate(("mean", "std")):
      old[name] = [float(v) for v in recorded.get(name) or stats[i]]


def resolved(values: dict, strategy_used: str, num_replicas: int,
             input_used: str, block, spec) -> dict:
  """`values` with what the settings resolved to on this machine."""
  return {**values, "strategy_used": strategy_used,
          "num_replicas": num_replicas, "input_used": input_used,
          "validation_used": block.as_dict(),
          "dataset_spec": {"image_shape": list(spec.image_shape),
                           "num_classes": spec.num_classes,
                           "mean": list(spec.mean), "std": list(spec.std)}}
