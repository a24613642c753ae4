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
import dataclasses
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags

from part_tf_flags import one_line  # pylint: disable=g-import-not-at-top
from part_tf_flags import parse_flags_or_exit  # pylint: disable=g-import-not-at-top
from part_tf_flags import refuse_urls  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf.parsing import parse_budget

flags.DEFINE_string("model_path", None, "Run folder, .keras file or SavedModel.")
flags.DEFINE_string("dataset", None, "Dataset (default: the run's).")
flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the run's).")
flags.DEFINE_list("epsilon", [], "Budgets, e.g. 8/255 or 2/255,4/255,8/255 "
                  "(default: the run's --eval_epsilon, else its --epsilon).")
flags.DEFINE_integer("num_examples", None, "Evaluate the first N test "
                     "examples.", lower_bound=1)
flags.DEFINE_list("attacks", [], "Attacks (default: all available): fgsm, "
                  "pgd, cw, mma, apgd_ce, apgd_t, square, apgd_dlr, fab_t, "
                  "fab.")
flags.DEFINE_enum("preset", None, ("aa_standard", "aa_plus", "aa_reference"),
                  "AutoAttack's standard or plus version, or aa_reference: "
                  "the PART reference code's 'AutoAttack' (torchattacks "
                  "3.4.0, 10 iterations: the paper's AA column, not "
                  "AutoAttack standard); attacks run in turn on the examples "
                  "still robust (fixes the attacks and their settings).")
flags.DEFINE_integer("num_steps", 20, "Steps of PGD / CW / MMA.", lower_bound=1)
flags.DEFINE_string("step_size", None, "Step size (default epsilon/4).")
flags.DEFINE_integer("restarts", 1, "PGD random restarts.", lower_bound=1)
flags.DEFINE_integer("apgd_steps", 100, "APGD iterations (per target for "
                     "APGD-T).", lower_bound=1)
flags.DEFINE_integer("square_queries", 1000, "Square query budget.",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the random starts.", lower_bound=0)
flags.DEFINE_bool("sanity_checks", True, "Run the gradient-masking checks.")
flags.DEFINE_list("corruptions", [], "CIFAR-10-C corruptions to measure "
                  "natural accuracy on ('all', or names like fog,"
                  "gaussian_noise); cifar10 models only.")
flags.DEFINE_list("corruption_severities", ["1", "2", "3", "4", "5"],
                  "Severities of the corruptions.")
flags.DEFINE_string("output_dir", None, "Where eval.json / eval.md go.")
flags.DEFINE_enum("strategy", "auto", ("auto", "one_device", "mirrored",
                                       "multi_worker", "tpu"),
                  "tf.distribute strategy; each replica attacks its share of "
                  "every batch, with the one-device results (see train.py).")
flags.DEFINE_string("tpu", None, "TPU address or name (selects TPUStrategy).")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices "
                     "(tests).", lower_bound=1)
flags.DEFINE_enum("checkpoint", "final", ("final", "best"), "For a run "
                  "folder: final: the last epoch's classifier; best: the "
                  "most robust epoch on the run's validation split (reports "
                  "then go to eval_best.json, .md, .png).")
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
                 "apgd_steps", "square_queries")


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


def _ok_budget(text):
  try:
    return 0 <= parse_budget(text) < 1
  except ValueError:
    return False


def load_model(path, checkpoint="final"):
  """(model_fn, input shape, run config or {}, default output folder) of a
  run folder (its `checkpoint`: final or best), a `.keras` file or a
  SavedModel.

  Raises:
    ValueError: the path holds no model, or one that cannot be loaded (the
      message names the file).
  """
  from part_tf import export  # pylint: disable=g-import-not-at-top
  from part_tf import run_folder  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    model, run, output = run_folder.load_classifier(path, checkpoint)
    return ((lambda x: model(x, training=False)), tuple(model.input_shape[1:]),
            run, output)
  if checkpoint != "final":
    raise ValueError(f"--checkpoint={checkpoint} needs a run folder; {path} "
                     "is a SavedModel")
  try:
    model_fn, input_shape = export.served_logits(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot load the SavedModel {path}: "
                     f"{one_line(e)[:300]}") from None
  return model_fn, input_shape, {}, os.path.dirname(os.path.abspath(path))


def table(reports, names, final="AutoAttack") -> str:
  """The Markdown table of the reports; after a sequence (a preset) the last
  column is the accuracy after all its attacks, headed `final`."""
  if reports and reports[0].get("sequential"):
    head = " | ".join(f"after {n}" for n in names) + f" | {final} |"
  else:
    head = " | ".join(names) + " | worst case |"
  lines = ["| epsilon | natural | " + head,
           "|---" * (len(names) + 3) + "|"]
  for r in reports:
    cells = [f"{r['robust_accuracy'][n]:.4f}" for n in names]
    lines.append(f"| {r['epsilon']:.4g} | {r['natural_accuracy']:.4f} | "
                 + " | ".join(cells) + f" | {r['worst_case_accuracy']:.4f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  from part_tf import attack_suite  # pylint: disable=g-import-not-at-top
  from part_tf import data  # pylint: disable=g-import-not-at-top
  from part_tf import distribution  # pylint: disable=g-import-not-at-top
  from part_tf import io_utils  # pylint: disable=g-import-not-at-top
  from part_tf import run_folder  # pylint: disable=g-import-not-at-top

  made_output = False
  del _WRITTEN[:]
  try:
    # Before TensorFlow runs anything (multi-worker and TPU need that).
    distribution.split_cpu(FLAGS.cpu_devices)
    strategy = distribution.create(FLAGS.strategy, FLAGS.tpu)
    # Only the chief writes the results of a multi-worker evaluation.
    writes = (distribution.kind(strategy) != "multi_worker"
              or distribution.cluster().is_chief)
    with strategy.scope():
      model_fn, input_shape, run, default_output = load_model(
          FLAGS.model_path, FLAGS.checkpoint)
    # The best checkpoint's reports sit beside the final one's.
    stem = "eval" if FLAGS.checkpoint == "final" else "eval_best"
    dataset = FLAGS.dataset or run.get("dataset")
    if dataset is None:
      raise ValueError("--dataset is needed for a model outside a run folder")
    data_dir = FLAGS.data_dir or run.get("data_dir")
    spec = data.spec_of_run(dataset, data_dir, run)
    expected = spec.image_shape
    if input_shape != tuple(expected) and not (
        len(input_shape) == len(expected) and all(
            a is None or a == b for a, b in zip(input_shape, expected))):
      raise ValueError(f"the model takes images of shape {input_shape}, but "
                       f"{dataset} images are {tuple(expected)}; pass the "
                       "--dataset the model was trained on")
    if FLAGS.corruptions and dataset != "cifar10":
      raise ValueError("--corruptions measures CIFAR-10-C: the model must be "
                       f"a cifar10 model, not {dataset}")
    # The results must have somewhere to go before the work starts.
    output_dir = os.path.abspath(FLAGS.output_dir or default_output)
    if not writes:
      output_dir = tempfile.mkdtemp(prefix="part_tf-evaluate-")
      atexit.register(shutil.rmtree, output_dir, True)
    made_output = not os.path.exists(output_dir)
    run_folder.check_writable(output_dir)
    budgets = ([parse_budget(e) for e in FLAGS.epsilon] or
               [run.get("eval_epsilon") or run.get("epsilon", 8 / 255)])
    _, test, _ = data.load(dataset, data_dir=data_dir,
                           max_test=FLAGS.num_examples, max_train=1,
                           spec=spec)
    if FLAGS.num_examples and len(test.labels) < FLAGS.num_examples:
      print(f"note: --num_examples={FLAGS.num_examples}, but the {dataset} "
            f"test split has {len(test.labels)} images: evaluating all "
            f"{len(test.labels)}", flush=True)
    preset = attack_suite.PRESETS.get(FLAGS.preset)
    if preset:
      names, config = list(preset.attacks), preset.config
      run_attacks = attack_suite.evaluate_sequence
    else:
      names = FLAGS.attacks or list(attack_suite.available_attacks())
      config = attack_suite.SuiteConfig(
          num_steps=FLAGS.num_steps, restarts=FLAGS.restarts,
          apgd_steps=FLAGS.apgd_steps,
          square_queries=FLAGS.square_queries,
          step_size=parse_budget(FLAGS.step_size) if FLAGS.step_size
          else None)
      run_attacks = attack_suite.evaluate
    test_ds = data.eval_dataset(test, FLAGS.batch_size)
    batches = -(-len(test.labels) // FLAGS.batch_size)
    reports = []
    for eps in budgets:
      started = time.perf_counter()
      report = run_attacks(
          model_fn, test_ds, eps, names, config, FLAGS.seed,
          progress=lambda it, e=eps: tqdm(it, total=batches,
                                          desc=f"eps={e:.4g}"),
          strategy=strategy)
      report["total_seconds"] = round(time.perf_counter() - started, 1)
      if FLAGS.sanity_checks:
        report["sanity_checks"] = [
            {"name": n, "passed": bool(ok), "detail": msg}
            for n, ok, msg in attack_suite.sanity_checks(
                model_fn, test_ds, report, config, FLAGS.seed,
                strategy=strategy)]
      reports.append(report)
    corrupted = None
    if FLAGS.corruptions:
      from part_tf import corruptions  # pylint: disable=g-import-not-at-top
      corrupted = corruptions.corruption_accuracy(
          model_fn, None if FLAGS.corruptions == ["all"] else FLAGS.corruptions,
          severities=[int(v) for v in FLAGS.corruption_severities],
          data_dir=FLAGS.data_dir or run.get("data_dir"),
          max_examples=FLAGS.num_examples, batch_size=FLAGS.batch_size)
    result = {"model_path": os.path.abspath(FLAGS.model_path),
              "checkpoint": FLAGS.checkpoint,
              "dataset": dataset, "attacks": names,
              "strategy": distribution.kind(strategy),
              "num_replicas": strategy.num_replicas_in_sync,
              "reports": reports}
    if preset:
      result["preset"] = FLAGS.preset
      result["preset_description"] = preset.description
      result["settings"] = dataclasses.asdict(config)
    else:
      result.update(num_steps=FLAGS.num_steps, restarts=FLAGS.restarts)
    if corrupted is not None:
      result["corruptions"] = corrupted
    io_utils.atomic_write_json(os.path.join(output_dir, f"{stem}.json"), result)
    _WRITTEN.append(f"{stem}.json")
    text = table(reports, names, preset.final if preset else "AutoAttack")
    if preset:
      text = f"{FLAGS.preset}: {preset.description}.\n\n{text}"
    for r in reports:
      for n, stats in r.get("minimum_norm", {}).items():
        if stats["median_norm"] is not None:
          text += (f"\n\n{n} at epsilon {r['epsilon']:.4g}: median of the "
                   "smallest adversarial perturbation found "
                   f"{stats['median_norm']:.4g} (L-inf, over the "
                   f"{stats['num_examples']} examples it attacked; "
                   f"{stats['found']:.1%} of them have one)")
    if corrupted is not None:
      text += ("\n\n| corruption | accuracy (mean over severities) |\n"
               "|---|---|\n"
               + "\n".join(f"| {n} | {a:.4f} |"
                           for n, a in corrupted["per_corruption"].items())
               + f"\n| **mean** | {corrupted['mean']:.4f} |")
    io_utils.atomic_write_text(os.path.join(output_dir, f"{stem}.md"),
                               text + "\n")
    _WRITTEN.append(f"{stem}.md")
    from part_tf import pictures  # pylint: disable=g-import-not-at-top
    from part_tf import plots  # pylint: disable=g-import-not-at-top
    io_utils.atomic_write_bytes(
        os.path.join(output_dir, f"{stem}.png"),
        pictures.figure_png(plots.robustness_figure(
            reports, names, title=f"{dataset}: "
            f"{os.path.basename(os.path.abspath(FLAGS.model_path))}"
            + (" (most robust epoch)" if FLAGS.checkpoint == "best" else "")
            + (f", {FLAGS.preset} (robust accuracy after each attack)"
               if FLAGS.preset else "")
            + (f", epsilon {reports[0]['epsilon']:.4g}"
               if len(reports) == 1 else ""),
            final=preset.final if preset else None)))
  except (ValueError, OSError) as e:
    if made_output:
      shutil.rmtree(output_dir, ignore_errors=True)
    sys.exit(f"error: {one_line(e)}")
  except KeyboardInterrupt:
    if made_output and not _WRITTEN:
      shutil.rmtree(output_dir, ignore_errors=True)
    raise
  print(text)
  for report in reports:
    if report.get("sequential"):
      print(f"eps={report['epsilon']:.4g}: " + ", ".join(
          f"{n} {report['robust_accuracy'][n]:.4f} "
          f"({report['examples_attacked'][n]} attacked, "
          f"{report['seconds'][n]:.1f} s)" for n in names)
            + f"; {preset.final} accuracy "
            f"{report['worst_case_accuracy']:.4f} "
            f"in {report['total_seconds']:.1f} s")
    for check in report.get("sanity_checks", []):
      if not check["passed"]:
        print(f"!!! SANITY CHECK FAILED (eps={report['epsilon']:.4g}): "
              f"{check['name']}: {check['detail']}. The robust accuracies "
              "above may be overestimated (gradient masking?).")
  print(f"wrote {os.path.join(output_dir, stem + '.json')}, {stem}.md and "
        f"{stem}.png")


# The reports written so far by this evaluation (for Ctrl-C's last line).
_WRITTEN = []


def _interrupted() -> str:
  if not _WRITTEN:
    return "interrupted; nothing written"
  return f"interrupted; wrote only {', '.join(_WRITTEN)}"


def run():
  """The `part-evaluate` command (and `python scripts/evaluate.py`)."""
  # absl prints the main module's docstring as the usage: this one.
  sys.modules["__main__"].__doc__ = __doc__
  run_command(main, lambda argv: parse_flags_or_exit(
      argv, dataset_defaults=False), interrupted=_interrupted)


if __name__ == "__main__":
  run()
