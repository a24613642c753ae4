r"""Draws what PART does to a few test images: image | CAM | eps_map |
perturbation | adversarial, one row per image, as a PNG grid.

  python scripts/visualize.py --model_path=runs/quickstart/part/seed0 \
      --num_images=4 --output=docs/quickstart_part.png
  python scripts/visualize.py --model_path=runs/quickstart/part/seed0 --cam=all

`--model_path` is a run folder (its config.json gives the dataset, budgets,
CAM, mask rule and attack) or a `.keras` classifier (then pass `--dataset`
and the budgets). The CAM needs the Keras model: an exported SavedModel has
no CAM layer, so use the run folder's `classifier.keras` instead. The grid
always shows PART's CAM budget, also for a model trained with a base method
(what PART would have done to it).
"""

import os
import sys

from absl import app
from absl import flags

from part_tf_flags import define_plugins_flag  # pylint: disable=g-import-not-at-top
from part_tf_flags import one_line  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import refuse_urls  # pylint: disable=g-import-not-at-top
from part_tf_flags.budgets import DEFINE_budget  # pylint: disable=g-import-not-at-top
from part_tf import components  # pylint: disable=unused-import
from part_tf import registry

# Plug-ins first: what they register becomes a choice of the flags below.
define_plugins_flag()
flags.DEFINE_string("model_path", None, "Run folder or .keras classifier.")
flags.DEFINE_string("dataset", None, "Dataset of the images (default: the "
                    f"run's): {', '.join(registry.DATASETS.names())} or tfds:NAME.")
flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's).")
flags.DEFINE_integer("num_images", 8, "Test images to draw (chosen by "
                     "--seed).", lower_bound=1, upper_bound=64)
flags.DEFINE_string("output", None, "PNG to write (default: pictures.png in "
                    "the run folder, or next to the .keras file).")
flags.DEFINE_enum("cam", None, (*registry.CAM_METHODS.names(), "all"),
                  "CAM method, or all for a row per method (default: the "
                  "run's, else gradcam_plus_plus).")
flags.DEFINE_enum("mask_rule", None, registry.MASK_RULES.names(),
                  "Mask rule (default: the run's, else zscore).")
DEFINE_budget("epsilon", None, "Full budget (default: the run's).")
DEFINE_budget("epsilon_low", None, "Reduced budget (default: the run's).")
DEFINE_budget("step_size", None, "Attack step (default: the run's).")
flags.DEFINE_integer("num_steps", None, "Attack steps (default: the run's).",
                     lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the image choice and the attack's "
                     "random start.", lower_bound=0)
flags.mark_flag_as_required("model_path")
refuse_urls("model_path", "output", "data_dir")
FLAGS = flags.FLAGS

def _saved_model_error(path):
  """The error for a SavedModel, naming the Keras model to use instead."""
  folder = os.path.abspath(path)
  for _ in range(3):
    candidate = os.path.join(folder, "classifier.keras")
    if os.path.exists(candidate):
      return ValueError(f"{path} is an exported SavedModel, which has no CAM "
                        "layer: the CAM needs the Keras model. Use "
                        f"--model_path={os.path.dirname(candidate)} (the run "
                        f"folder) or --model_path={candidate}")
    folder = os.path.dirname(folder)
  return ValueError(f"{path} is an exported SavedModel, which has no CAM "
                    "layer: the CAM needs the Keras model. Pass the run folder "
                    "or its classifier.keras")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import keras  # pylint: disable=g-import-not-at-top
  from part_tf import data  # pylint: disable=g-import-not-at-top
  from part_tf import io_utils  # pylint: disable=g-import-not-at-top
  from part_tf import pictures  # pylint: disable=g-import-not-at-top
  from part_tf import run_folder  # pylint: disable=g-import-not-at-top
  try:
    if os.path.exists(os.path.join(FLAGS.model_path, "saved_model.pb")):
      raise _saved_model_error(FLAGS.model_path)
    classifier, run, default_output = run_folder.load_classifier(
        FLAGS.model_path)
    dataset = FLAGS.dataset or run.get("dataset")
    if dataset is None:
      raise ValueError("--dataset is needed for a model outside a run folder")
    data_dir = FLAGS.data_dir or run.get("data_dir")
    spec = data.spec_of_run(dataset, data_dir, run)
    if tuple(classifier.input_shape[1:]) != tuple(spec.image_shape):
      raise ValueError(f"the model takes images of shape "
                       f"{tuple(classifier.input_shape[1:])}, but {dataset} "
                       f"images are {tuple(spec.image_shape)}")
    output = os.path.abspath(FLAGS.output or os.path.join(default_output,
                                                          "pictures.png"))
    if not output.endswith(".png"):
      raise ValueError(f"--output must name a .png file, got {output}")
    run_folder.check_writable(os.path.dirname(output))
    natural_path = os.path.join(default_output, "natural_classifier.keras")
    natural = (keras.saving.load_model(natural_path)
               if os.path.exists(natural_path) else None)
    cams = (list(registry.CAM_METHODS.names()) if FLAGS.cam == "all"
            else [FLAGS.cam or run.get("cam") or "gradcam_plus_plus"])
    model = pictures.part_model_of_run(classifier, run, {
        name: FLAGS[name].value for name in (
            "epsilon", "epsilon_low", "step_size", "num_steps", "mask_rule")
    } | {"cam": cams[0]}, natural)
    _, test, _ = data.load(dataset, data_dir=data_dir, max_train=1,
                           spec=spec)
    figure, count = pictures.run_grid(
        model, dataset, test, cams, FLAGS.num_images, FLAGS.seed,
        "/".join(os.path.abspath(FLAGS.model_path).split(os.sep)[-2:]))
    io_utils.atomic_write_bytes(output, pictures.figure_png(figure))
  except (ValueError, OSError) as e:
    sys.exit(f"error: {one_line(e)}")
  print(f"wrote {output} ({count} images x {len(cams)} CAM "
        f"method{'s' if len(cams) > 1 else ''})")


def run():
  """The `part-visualize` command (and `python scripts/visualize.py`)."""
  run_command(main, dataset_defaults=False, doc=__doc__)


if __name__ == "__main__":
  run()
