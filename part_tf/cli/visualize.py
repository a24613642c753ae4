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

from part_tf_flags import one_line  # pylint: disable=g-import-not-at-top
from part_tf_flags import parse_flags_or_exit  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import refuse_urls  # pylint: disable=g-import-not-at-top
from part_tf_flags.budgets import DEFINE_budget  # pylint: disable=g-import-not-at-top
from part_tf_flags.train_flags import CAM_METHODS  # pylint: disable=g-import-not-at-top
from part_tf_flags.train_flags import DATASET_NAMES  # pylint: disable=g-import-not-at-top
from part_tf_flags.train_flags import MASK_RULES  # pylint: disable=g-import-not-at-top

flags.DEFINE_string("model_path", None, "Run folder or .keras classifier.")
flags.DEFINE_string("dataset", None, "Dataset of the images (default: the "
                    f"run's): {', '.join(DATASET_NAMES)} or tfds:NAME.")
flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's).")
flags.DEFINE_integer("num_images", 8, "Test images to draw (chosen by "
                     "--seed).", lower_bound=1, upper_bound=64)
flags.DEFINE_string("output", None, "PNG to write (default: pictures.png in "
                    "the run folder, or next to the .keras file).")
flags.DEFINE_enum("cam", None, (*CAM_METHODS, "all"),
                  "CAM method, or all for a row per method (default: the "
                  "run's, else gradcam_plus_plus).")
flags.DEFINE_enum("mask_rule", None, MASK_RULES,
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

# The PART variant of each method: the grid shows PART's budget.
_REWEIGHTED = {"at": "part", "trades": "part_t", "mart": "part_m",
               "act": "part_act"}


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
  import numpy as np  # pylint: disable=g-import-not-at-top
  from part_tf import data  # pylint: disable=g-import-not-at-top
  from part_tf import io_utils  # pylint: disable=g-import-not-at-top
  from part_tf import pictures  # pylint: disable=g-import-not-at-top
  from part_tf import run_folder  # pylint: disable=g-import-not-at-top
  from part_tf.training import PARTModel  # pylint: disable=g-import-not-at-top

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
    expected = tuple(spec.image_shape)
    if tuple(classifier.input_shape[1:]) != expected:
      raise ValueError(f"the model takes images of shape "
                       f"{tuple(classifier.input_shape[1:])}, but {dataset} "
                       f"images are {expected}")
    output = os.path.abspath(FLAGS.output or os.path.join(default_output,
                                                          "pictures.png"))
    if not output.endswith(".png"):
      raise ValueError(f"--output must name a .png file, got {output}")
    run_folder.check_writable(os.path.dirname(output))
    settings = {"epsilon": 8 / 255, "epsilon_low": 7 / 255,
                "step_size": 2 / 255, "num_steps": 10,
                "cam": "gradcam_plus_plus", "mask_rule": "zscore",
                "method": "part", "attack": "pgd", "beta": 6.0,
                "cam_layer": "cam_features", "act_alpha": 0.9}
    settings.update({k: run[k] for k in settings if k in run})
    for name in ("epsilon", "epsilon_low", "step_size", "num_steps",
                 "mask_rule"):
      if FLAGS[name].value is not None:
        settings[name] = FLAGS[name].value
    if not 0 <= settings["epsilon_low"] <= settings["epsilon"] < 1:
      raise ValueError("need 0 <= --epsilon_low <= --epsilon < 1, got "
                       f"{settings['epsilon_low']} and {settings['epsilon']}")
    cams = (list(pictures.CAM_METHODS) if FLAGS.cam == "all"
            else [FLAGS.cam or settings["cam"]])
    method = _REWEIGHTED.get(settings["method"], settings["method"])
    natural = None
    if method == "part_act":  # ACT's AEs read its natural model
      natural_path = os.path.join(default_output, "natural_classifier.keras")
      if not os.path.exists(natural_path):
        raise ValueError(f"an ACT model's adversarial examples need its "
                         f"natural model, {natural_path}: pass the run "
                         "folder as --model_path")
      natural = keras.saving.load_model(natural_path)
    model = PARTModel(
        classifier, method=method, natural_classifier=natural,
        epsilon=settings["epsilon"], epsilon_low=settings["epsilon_low"],
        step_size=settings["step_size"], num_steps=settings["num_steps"],
        cam=cams[0], mask_rule=settings["mask_rule"],
        cam_layer=settings["cam_layer"], beta=settings["beta"],
        attack=settings["attack"], act_alpha=settings["act_alpha"],
        seed=FLAGS.seed)
    _, test, _ = data.load(dataset, data_dir=data_dir, max_train=1,
                           spec=spec)
    chosen = np.sort(np.random.default_rng(FLAGS.seed).choice(
        len(test.labels), min(FLAGS.num_images, len(test.labels)),
        replace=False))
    images = test.images[chosen].astype(np.float32) / 255.0
    panels = [pictures.compute_panel(model, images, test.labels[chosen],
                                     cam=cam, reweighted=True,
                                     seed=(FLAGS.seed, 0)) for cam in cams]
    where = os.path.abspath(FLAGS.model_path).split(os.sep)[-2:]
    title = (f"{dataset}, {'/'.join(where)}"
             f": {settings['mask_rule']} budget, epsilon "
             f"{settings['epsilon']:.3g} / {settings['epsilon_low']:.3g}, "
             f"PGD-{settings['num_steps']}")
    figure = pictures.render_grid(
        panels, pictures.CLASS_NAMES.get(dataset), title=title,
        row_labels=[f"{cam}" for cam in cams])
    io_utils.atomic_write_bytes(output, pictures.figure_png(figure))
  except (ValueError, OSError) as e:
    sys.exit(f"error: {one_line(e)}")
  print(f"wrote {output} ({len(chosen)} images x {len(cams)} CAM "
        f"method{'s' if len(cams) > 1 else ''})")


def run():
  """The `part-visualize` command (and `python scripts/visualize.py`)."""
  # absl prints the main module's docstring as the usage: this one.
  sys.modules["__main__"].__doc__ = __doc__
  run_command(main, lambda argv: parse_flags_or_exit(
      argv, dataset_defaults=False))


if __name__ == "__main__":
  run()
