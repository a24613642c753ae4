r"""Evaluates the robustness of a trained classifier with an attack suite.

  python scripts/evaluate.py --model_path=runs/quickstart/part/seed0
  python scripts/evaluate.py --model_path=runs/cifar10_part/export/80 \
      --dataset=cifar10 --epsilon=2/255,4/255,8/255,16/255 --num_examples=1000
  python scripts/evaluate.py --model_path=runs/cifar10_part \
      --preset=aa_standard --num_examples=1000

`--preset=aa_standard` is AutoAttack's "standard" version (APGD-CE, APGD-T,
FAB-T, Square at their published settings, seed 0), run as AutoAttack runs
it: each attack only on the examples still robust, reporting the robust
accuracy after each attack and the final AutoAttack accuracy;
`--preset=aa_plus` is the "plus" version (more attacks, restarts).
`--preset=aa_reference` is what the PART reference code calls AutoAttack:
torchattacks 3.4.0's `AutoAttack(version='standard')`, the same four attacks
with 10 iterations instead of 100. It reproduces the paper's AA column; it is
not AutoAttack standard, and its report says so: report aa_standard.

`--model_path` is a run folder (its config.json gives the default dataset and
epsilon), a `.keras` file or an exported SavedModel. Writes `eval.json` and
`eval.md` and `eval.png` (accuracy against epsilon per attack, or a bar per
attack for one epsilon) to `--output_dir` (default: the run folder, or next to
the model),
and with `--corruptions=all` the accuracy under CIFAR-10-C corruptions,
one report per epsilon, each with natural accuracy, robust accuracy per attack,
the per-example worst case over all attacks, and gradient-masking sanity
checks (a failed check is printed loudly and recorded).
"""

import atexit
import os
import shutil
import sys
import tempfile

from absl import app
from absl import flags

from part_tf import attack_catalogue
from part_tf.config import RunConfig
from part_tf.evaluation_config import PRESETS
from part_tf.evaluation_config import SuiteConfig
from part_tf.parsing import parse_budget
from part_tf_flags import define_plugins_flag  # pylint: disable=g-import-not-at-top
from part_tf_flags import one_line  # pylint: disable=g-import-not-at-top
from part_tf_flags import refuse_urls  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top

# Plug-ins first: what they register becomes a choice of the flags below.
define_plugins_flag()
flags.DEFINE_string("model_path", None, "Run folder, .keras file or SavedModel.")
flags.DEFINE_string("dataset", None, "Dataset (default: the run's).")
flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's).")
flags.DEFINE_list("epsilon", [], "Budgets, e.g. 8/255 or 2/255,4/255,8/255 "
                  "(default: the run's --eval_epsilon, else its --epsilon).")
flags.DEFINE_integer("num_examples", None, "Evaluate the first N test "
                     "examples (default: those the run measured, all unless "
                     "it set --max_test_examples).", lower_bound=1)
flags.DEFINE_list("attacks", [], "Attacks (default: all available): "
                  + ", ".join(attack_catalogue.evaluation_attacks()) + ".")
flags.DEFINE_enum("preset", None, tuple(PRESETS),
                  "Attacks run in turn on the examples still robust, with "
                  "fixed settings: " + "; ".join(
                      f"{name}: {preset.description}"
                      for name, preset in PRESETS.items()) + ".")
flags.DEFINE_integer("num_steps", SuiteConfig.num_steps,
                     "Steps of PGD / CW / MMA.", lower_bound=1)
flags.DEFINE_string("step_size", None, "Step size (default epsilon/4).")
flags.DEFINE_integer("restarts", SuiteConfig.restarts, "PGD random restarts.",
                     lower_bound=1)
flags.DEFINE_integer("apgd_steps", SuiteConfig.apgd_steps, "APGD iterations "
                     "(per target for APGD-T).", lower_bound=1)
flags.DEFINE_integer("apgd_restarts", SuiteConfig.apgd_restarts,
                     "Restarts of APGD-CE and APGD-DLR.", lower_bound=1)
flags.DEFINE_integer("num_targets", SuiteConfig.num_targets, "Target classes "
                     "of APGD-T and FAB-T (the top wrong classes; capped at "
                     "the number of classes - 1).", lower_bound=1)
flags.DEFINE_integer("fab_steps", SuiteConfig.fab_steps, "FAB iterations "
                     "(per target for FAB-T).", lower_bound=0)
flags.DEFINE_integer("fab_restarts", SuiteConfig.fab_restarts,
                     "Runs of untargeted FAB.", lower_bound=1)
flags.DEFINE_integer("square_queries", SuiteConfig.square_queries,
                     "Square query budget.", lower_bound=1)
flags.DEFINE_integer("batch_size", None, "Batch size (default: the run's "
                     "--eval_batch_size, else 256; the random starts follow "
                     "the batches, so the run's gives its metrics.json "
                     "numbers).", lower_bound=1)
flags.DEFINE_integer("seed", None, "Seed of the random starts (default: "
                     "the run's seed, as in its metrics.json; 0 for a model "
                     "outside a run folder).", lower_bound=0)
flags.DEFINE_bool("sanity_checks", True, "Run the gradient-masking checks.")
flags.DEFINE_list("corruptions", [], "CIFAR-10-C corruptions to measure "
                  "natural accuracy on ('all', or names like fog,"
                  "gaussian_noise); cifar10 models only.")
flags.DEFINE_list("corruption_severities", ["1", "2", "3", "4", "5"],
                  "Severities of the corruptions.")
flags.DEFINE_string("output_dir", None, "Where eval.json / eval.md go.")
flags.DEFINE_list("input_range", ["0", "1"], "For a model part_tf did not "
                  "train: the range LOW,HIGH its input pixels take (e.g. "
                  "0,255 or -1,1); images in [0, 1] are mapped to it. The "
                  "budgets stay in [0, 1] units.")
flags.DEFINE_list("input_mean", [], "For a model that expects normalised "
                  "inputs: the per-channel mean subtracted after "
                  "--input_range (with --input_std).")
flags.DEFINE_list("input_std", [], "The per-channel standard deviation "
                  "divided by after --input_mean.")
flags.DEFINE_enum("strategy", "auto", ("auto", "one_device", "mirrored",
                                       "multi_worker", "tpu"),
                  "tf.distribute strategy; each replica attacks its share of "
                  "every batch, with the one-device results (see train.py).")
flags.DEFINE_string("tpu", None, "TPU address or name (selects TPUStrategy).")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices "
                     "(tests).", lower_bound=1)
flags.DEFINE_float("cluster_timeout", RunConfig.cluster_timeout,
                   "Seconds each task of a multi-worker evaluation waits for "
                   "the others to start (see train.py).")
flags.register_validator("cluster_timeout", lambda v: v > 0,
                         message="--cluster_timeout must be > 0 seconds")
flags.DEFINE_enum("checkpoint", "final", ("final", "best"), "For a run "
                  "folder: final: the last epoch's classifier; best: the "
                  "most robust epoch on the run's validation split (reports "
                  "then go to eval_best.json, .md, .png).")
flags.DEFINE_bool("save_examples", False, "Also write eval_examples.npz: "
                  "per test example, classified right clean and under each "
                  "attack (to compare models example by example).")
flags.mark_flag_as_required("model_path")
refuse_urls("model_path", "output_dir", "data_dir")
flags.register_validator("model_path",
                         lambda p: p is None or os.path.exists(p),
                         message="--model_path does not exist")
flags.register_validator("epsilon", lambda v: all(_ok_budget(e) for e in v),
                         message="--epsilon must be budgets like 8/255, "
                         "below 1 (images are in [0, 1])")
flags.register_validator("step_size", lambda v: v is None or _ok_budget(v),
                         message="--step_size must be a budget like 2/255")
FLAGS = flags.FLAGS
# Settings a preset fixes.
_PRESET_FIXES = ("attacks", "num_steps", "step_size", "restarts",
                 "apgd_steps", "apgd_restarts", "num_targets", "fab_steps",
                 "fab_restarts", "square_queries")


def _preset_alone(values):
  if values["preset"] is None:
    return True
  clash = [f"--{n}" for n in _PRESET_FIXES if FLAGS[n].present]
  if clash:
    raise flags.ValidationError(
        f"--preset={values['preset']} fixes the attacks and their settings; "
        f"drop {', '.join(clash)}")
  return True


flags.register_multi_flags_validator(("preset",) + _PRESET_FIXES,
                                     _preset_alone)


def _numbers(values):
  try:
    return [float(v) for v in values]
  except ValueError:
    return None


flags.register_validator(
    "input_range", lambda v: (_numbers(v) or [0, 0]).__len__() == 2 and (
        _numbers(v)[0] < _numbers(v)[1]),
    message="--input_range must be LOW,HIGH with LOW < HIGH, e.g. 0,255")
flags.register_multi_flags_validator(
    ("input_mean", "input_std"), lambda v: (
        _numbers(v["input_mean"]) is not None
        and _numbers(v["input_std"]) is not None
        and len(v["input_mean"]) == len(v["input_std"])
        and all(x > 0 for x in _numbers(v["input_std"]))),
    message="--input_mean and --input_std must be numbers, one per channel "
    "each (the same count), with positive standard deviations")


def _ok_budget(text):
  try:
    return 0 <= parse_budget(text) < 1
  except ValueError:
    return False


def request_from_flags():
  """The `evaluation_report.Request` of the parsed flags."""
  from part_tf import evaluation_report  # pylint: disable=g-import-not-at-top
  return evaluation_report.Request(
      model_path=FLAGS.model_path, checkpoint=FLAGS.checkpoint,
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
      budgets=tuple(parse_budget(e) for e in FLAGS.epsilon),
      attacks=tuple(FLAGS.attacks), preset=FLAGS.preset,
      config=SuiteConfig(
          num_steps=FLAGS.num_steps, restarts=FLAGS.restarts,
          apgd_steps=FLAGS.apgd_steps, apgd_restarts=FLAGS.apgd_restarts,
          num_targets=FLAGS.num_targets, fab_steps=FLAGS.fab_steps,
          fab_restarts=FLAGS.fab_restarts,
          square_queries=FLAGS.square_queries,
          step_size=parse_budget(FLAGS.step_size) if FLAGS.step_size
          else None),
      seed=FLAGS.seed, batch_size=FLAGS.batch_size,
      num_examples=FLAGS.num_examples, sanity_checks=FLAGS.sanity_checks,
      corruptions=tuple(FLAGS.corruptions),
      severities=tuple(int(v) for v in FLAGS.corruption_severities),
      output_dir=FLAGS.output_dir,
      input_range=tuple(_numbers(FLAGS.input_range)),
      input_mean=tuple(_numbers(FLAGS.input_mean)),
      input_std=tuple(_numbers(FLAGS.input_std)),
      save_examples=FLAGS.save_examples)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from part_tf import distribution  # pylint: disable=g-import-not-at-top
  from part_tf import evaluation_report as report  # pylint: disable=g-import-not-at-top
  request, output_dir, made_output = request_from_flags(), None, False
  try:
    # Before TensorFlow runs anything (multi-worker and TPU need that).
    distribution.split_cpu(FLAGS.cpu_devices)
    strategy = distribution.create(FLAGS.strategy, FLAGS.tpu,
                                   FLAGS.cluster_timeout)
    # Only the chief writes the results of a multi-worker evaluation.
    if distribution.kind(strategy) == "multi_worker" and (
        not distribution.cluster().is_chief):
      request.output_dir = tempfile.mkdtemp(prefix="part_tf-evaluate-")
      atexit.register(shutil.rmtree, request.output_dir, True)
    loaded = report.prepare(request, strategy)
    output_dir, made_output = loaded.output_dir, loaded.created_output_dir
    if FLAGS.num_examples and len(loaded.test.labels) < FLAGS.num_examples:
      print(f"note: --num_examples={FLAGS.num_examples}, but the "
            f"{loaded.dataset} test split has {len(loaded.test.labels)} "
            f"images: evaluating all {len(loaded.test.labels)}", flush=True)
    outcome = report.run(request, loaded, strategy, progress=lambda it, n, e:
                         tqdm(it, total=n, desc=f"eps={e:.4g}"))
    files = report.write(outcome, on_written=_WRITTEN.append)
  except (ValueError, OSError) as e:
    if made_output:
      shutil.rmtree(output_dir, ignore_errors=True)
    from part_tf import multi_worker  # pylint: disable=g-import-not-at-top
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    multi_worker.quiet_teardown()  # TF's multi-worker runtime logs at exit
    sys.exit(1)
  except KeyboardInterrupt:
    if made_output and not _WRITTEN:
      shutil.rmtree(output_dir, ignore_errors=True)
    raise
  print(outcome.text)
  for line in report.summary_lines(outcome):
    print(line)
  print(f"wrote {os.path.join(outcome.output_dir, files[0])}, "
        + ", ".join(files[1:]))


# The reports written so far by this evaluation (for Ctrl-C's last line).
_WRITTEN = []


def _interrupted() -> str:
  if not _WRITTEN:
    return "interrupted; nothing written"
  return f"interrupted; wrote only {', '.join(_WRITTEN)}"


def run():
  """The `part-evaluate` command (and `python scripts/evaluate.py`)."""
  run_command(main, dataset_defaults=False, interrupted=_interrupted,
              doc=__doc__)


if __name__ == "__main__":
  run()
