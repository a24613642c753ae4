"""An evaluation of a trained model, as `evaluate.py` runs it and writes it.

`Request` says what to evaluate (a run folder, a `.keras` file or a
SavedModel; the budgets; the attacks or a preset); `run` measures it with
`part_tf.evaluation.Evaluator` (the loop behind every accuracy part_tf
reports) and `write` puts the reports beside the model:

  eval.json        every number, per budget (with a preset: its settings)
  eval.md          the table, FAB's median norms, the corruptions' table
  eval.png         accuracy against epsilon per attack, or a bar per attack
  eval_robustbench.json   with a preset: a RobustBench-style summary
                   (clean_acc, autoattack_acc, eps, norm, dataset,
                   architecture, number_forward_passes, unreliable_evaluation)
  eval_examples.npz   with `save_examples`: per test example (in order),
                   `natural` (classified right) and `robust_<attack>` (one
                   row per budget, in `epsilons`' order)

(`eval_best.*` for a run's most robust epoch.)
"""

import dataclasses
import os
import shutil
import time

from part_tf import attack_suite
from part_tf import data
from part_tf import distribution
from part_tf import evaluation
from part_tf import io_utils
from part_tf import run_folder

ROBUSTBENCH_FILE = "robustbench.json"


@dataclasses.dataclass
class Request:
  """What to evaluate and how.

  Attributes:
    model_path: a run folder, a `.keras` file or a SavedModel.
    checkpoint: for a run folder: "final" or "best".
    dataset: the dataset (default: the run's).
    data_dir: TFDS data folder (default: the run's).
    budgets: the L-inf budgets (default: the run's eval_epsilon, else its
      epsilon, else 8/255).
    attacks: evaluation attacks (default: all), unless `preset`.
    preset: a name of `attack_suite.PRESETS` (its attacks run in turn on the
      examples still robust), or None.
    config: the attacks' settings (a preset brings its own).
    seed: base of the attacks' random draws (default: the run's seed, as
      its metrics.json was measured with; 0 without a run).
    batch_size: evaluation batch size (default: the run's eval_batch_size,
      256 without a run: the random starts follow the batches).
    num_examples: the first N test examples (default: those the run
      measured, its max_test_examples; all without a run).
    sanity_checks: run the gradient-masking checks.
    corruptions: CIFAR-10-C corruptions to measure (["all"], names, or []).
    severities: their severities.
    output_dir: where the reports go (default: the run folder, or next to
      the model).
    input_range: (low, high): the model takes pixels scaled linearly from
      [0, 1] to [low, high] (e.g. (0, 255) or (-1, 1)); the budgets stay in
      [0, 1] units. Default (0, 1): part_tf's models.
    input_mean: per-channel mean subtracted after `input_range` (with
      `input_std`), for a model that expects normalised inputs; () for none.
    input_std: per-channel standard deviation divided by after `input_mean`.
    save_examples: also write `<stem>_examples.npz`, the per-example results
      behind every accuracy (to compare models or runs example by example).
  """
  model_path: str
  checkpoint: str = "final"
  dataset: str | None = None
  data_dir: str | None = None
  budgets: tuple = ()
  attacks: tuple = ()
  preset: str | None = None
  config: evaluation.SuiteConfig = evaluation.SuiteConfig()
  seed: int | None = None
  batch_size: int | None = None
  num_examples: int | None = None
  sanity_checks: bool = True
  corruptions: tuple = ()
  severities: tuple = (1, 2, 3, 4, 5)
  output_dir: str | None = None
  input_range: tuple = (0.0, 1.0)
  input_mean: tuple = ()
  input_std: tuple = ()
  save_examples: bool = False


@dataclasses.dataclass
class Outcome:
  """A finished evaluation.

  Attributes:
    result: what eval.json holds.
    text: what eval.md holds.
    reports: the evaluator's report per budget.
    names: the attacks, in order.
    final: the name of the last column (a preset's final accuracy).
    stem: "eval", or "eval_best" for a run's most robust epoch.
    output_dir: where the reports go.
    title: the picture's title.
    summary: the RobustBench-style summary (presets), or None.
    examples: with `Request.save_examples`, the per-example arrays of
      `<stem>_examples.npz`; else None.
  """
  result: dict
  text: str
  reports: list
  names: list
  final: str
  stem: str
  output_dir: str
  title: str
  summary: dict | None
  examples: dict | None = None


def input_scaling(input_range=(0.0, 1.0), mean=(), std=()):
  """images in [0, 1] -> what a model that takes other inputs takes: pixels
  mapped linearly to `input_range`, then `(x - mean) / std` per channel;
  None for part_tf's models ([0, 1], no normalisation). The attacks and
  their budgets stay in [0, 1] units.

  Raises:
    ValueError: an empty range, a mean without a std (or the other way
      round), or a std that is not positive.
  """
  low, high = (float(v) for v in input_range)
  if not high > low:
    raise ValueError(f"input_range must go up, got {low:g},{high:g}")
  if bool(mean) != bool(std) or (mean and len(mean) != len(std)):
    raise ValueError("input_mean and input_std go together, one value per "
                     f"channel each; got {len(mean)} and {len(std)}")
  if any(v <= 0 for v in std):
    raise ValueError(f"input_std must be positive, got {list(std)}")
  if (low, high) == (0.0, 1.0) and not mean:
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shift = tf.constant(mean or (0.0,), tf.float32)
  scale = tf.constant(std or (1.0,), tf.float32)
  return lambda images: (images * (high - low) + low - shift) / scale


def load_model(path: str, checkpoint: str = "final", scale=None):
  """(model_fn, input shape, run settings or {}, default output folder) of
  a run folder (its `checkpoint`: final or best), a `.keras` file or a
  SavedModel; `model_fn` takes images in [0, 1] and gives logits, through
  `scale` (`input_scaling`) for a model that takes other inputs.

  Raises:
    ValueError: the path holds no model, or one that cannot be loaded (the
      message names the file).
  """
  from part_tf import export  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    model, run, output = run_folder.load_classifier(path, checkpoint)
    if scale is None:
      model_fn = lambda x: model(x, training=False)
    else:
      model_fn = lambda x: model(scale(x), training=False)
    return model_fn, tuple(model.input_shape[1:]), run, output
  if checkpoint != "final":
    raise ValueError(f"--checkpoint={checkpoint} needs a run folder; {path} "
                     "is a SavedModel")
  try:
    model_fn, input_shape = export.served_logits(path, scale)
  except Exception as e:  # pylint: disable=broad-except
    detail = " ".join(str(e).split())[:300] or type(e).__name__
    raise ValueError(f"cannot load the SavedModel {path}: {detail}"
                     ) from None
  return model_fn, input_shape, {}, os.path.dirname(os.path.abspath(path))


@dataclasses.dataclass
class _Loaded:
  model_fn: object
  run: dict
  dataset: str
  data_dir: str | None
  test: object
  output_dir: str
  # Whether `prepare` created `output_dir` (a failed or interrupted
  # evaluation removes it again).
  created_output_dir: bool = False


def prepare(request: Request, strategy, writes: bool = True) -> _Loaded:
  """Loads the model and its test images, and checks that the reports have
  somewhere to go, before any work starts.

  Raises:
    ValueError: a model, dataset or output folder that cannot serve.
  """
  with strategy.scope():
    model_fn, input_shape, run, default_output = load_model(
        request.model_path, request.checkpoint, input_scaling(
            request.input_range, request.input_mean, request.input_std))
  if request.input_mean and len(request.input_mean) != input_shape[-1]:
    raise ValueError(f"input_mean has {len(request.input_mean)} values, "
                     f"but the model takes {input_shape[-1]} channel(s)")
  dataset = request.dataset or run.get("dataset")
  num_examples = request.num_examples
  if num_examples is None and dataset == run.get("dataset"):
    num_examples = run.get("max_test_examples")  # the images it measured
  if dataset is None:
    raise ValueError("--dataset is needed for a model outside a run folder")
  data_dir = request.data_dir or run.get("data_dir")
  spec = data.spec_of_run(dataset, data_dir, run)
  expected = tuple(spec.image_shape)
  if tuple(input_shape) != expected and not (
      len(input_shape) == len(expected) and all(
          a is None or a == b for a, b in zip(input_shape, expected))):
    raise ValueError(f"the model takes images of shape {input_shape}, but "
                     f"{dataset} images are {expected}; pass the --dataset "
                     "the model was trained on")
  if request.corruptions and dataset != "cifar10":
    raise ValueError("--corruptions measures CIFAR-10-C: the model must be "
                     f"a cifar10 model, not {dataset}")
  output_dir = os.path.abspath(request.output_dir or default_output)
  created = writes and not os.path.exists(output_dir)
  if writes:
    run_folder.check_writable(output_dir)
  try:
    _, test, _ = data.load(dataset, data_dir=data_dir,
                           max_test=num_examples, max_train=1,
                           spec=spec)
  except BaseException:
    if created:
      shutil.rmtree(output_dir, ignore_errors=True)
    raise
  return _Loaded(model_fn, run, dataset, data_dir, test, output_dir,
                 created)


def run(request: Request, loaded: _Loaded, strategy, progress=None) -> Outcome:
  """Measures every budget (then the corruptions).

  Args:
    request: what to evaluate.
    loaded: its model and images (`prepare`).
    strategy: the `tf.distribute` strategy to evaluate under.
    progress: `(iterator, total batches, budget) -> iterator` (e.g. tqdm),
      or None.
  """
  if request.seed is None:  # a run's metrics.json used the run's seed
    request = dataclasses.replace(request, seed=loaded.run.get("seed", 0))
  preset = attack_suite.PRESETS.get(request.preset)
  names = list(preset.attacks if preset else
               request.attacks or evaluation.available_attacks())
  config = preset.config if preset else request.config
  batch_size = request.batch_size or loaded.run.get("eval_batch_size", 256)
  test_ds = data.eval_dataset(loaded.test, batch_size)
  batches = -(-len(loaded.test.labels) // batch_size)
  run_settings = loaded.run
  budgets = list(request.budgets) or [
      run_settings.get("eval_epsilon") or run_settings.get("epsilon", 8 / 255)]
  reports = [_one_budget(request, loaded, eps, names, config, bool(preset),
                         test_ds, batches, strategy, progress)
             for eps in budgets]
  corrupted = None
  if request.corruptions:
    from part_tf import corruptions  # pylint: disable=g-import-not-at-top
    corrupted = corruptions.corruption_accuracy(
        loaded.model_fn,
        None if list(request.corruptions) == ["all"] else request.corruptions,
        severities=request.severities, data_dir=loaded.data_dir,
        max_examples=request.num_examples, batch_size=batch_size)
  return _outcome(request, loaded, preset, names, config, reports, corrupted,
                  strategy, batch_size)


def _one_budget(request, loaded, eps, names, config, sequential, test_ds,
                batches, strategy, progress) -> dict:
  started = time.perf_counter()
  evaluator = evaluation.Evaluator(loaded.model_fn, eps, names, config,
                                   request.seed, sequential=sequential,
                                   strategy=strategy)
  report = evaluator(test_ds, per_example=request.save_examples,
                     progress=None if progress is None else (
                         lambda it: progress(it, batches, eps)))
  report["total_seconds"] = round(time.perf_counter() - started, 1)
  if request.sanity_checks:
    report["sanity_checks"] = [
        {"name": n, "passed": bool(ok), "detail": msg}
        for n, ok, msg in attack_suite.sanity_checks(
            loaded.model_fn, test_ds, report, config, request.seed,
            strategy=strategy)]
  return report


def _outcome(request, loaded, preset, names, config, reports, corrupted,
             strategy, batch_size) -> Outcome:
  result = {"model_path": os.path.abspath(request.model_path),
            "checkpoint": request.checkpoint, "dataset": loaded.dataset,
            "attacks": names, "strategy": distribution.kind(strategy),
            "num_replicas": strategy.num_replicas_in_sync,
            "batch_size": batch_size, "seed": request.seed,
            "reports": reports}
  if tuple(request.input_range) != (0.0, 1.0) or request.input_mean:
    result["input_scaling"] = {"input_range": list(request.input_range),
                               "input_mean": list(request.input_mean),
                               "input_std": list(request.input_std)}
  # Every attack setting, so that the report says how it was made.
  result["settings"] = dataclasses.asdict(config)
  if preset:
    result.update(preset=request.preset,
                  preset_description=preset.description)
  else:  # also at the top level, where reports before `settings` had them
    result.update(num_steps=config.num_steps, restarts=config.restarts)
  if corrupted is not None:
    result["corruptions"] = corrupted
  final = preset.final if preset else "AutoAttack"
  text = table(reports, names, final)
  if preset:
    text = f"{request.preset}: {preset.description}.\n\n{text}"
  text += norms_text(reports) + corruptions_text(corrupted)
  title = (f"{loaded.dataset}: "
           f"{os.path.basename(os.path.abspath(request.model_path))}"
           + (" (most robust epoch)" if request.checkpoint == "best" else "")
           + (f", {request.preset} (robust accuracy after each attack)"
              if preset else "")
           + (f", epsilon {reports[0]['epsilon']:.4g}"
              if len(reports) == 1 else ""))
  examples = _examples(reports, names) if request.save_examples else None
  return Outcome(
      result, text, reports, names, final,
      "eval" if request.checkpoint == "final" else "eval_best",
      loaded.output_dir, title,
      robustbench_summary(reports[0], loaded, request)
      if preset and request.preset.startswith("aa_") else None, examples)


def _examples(reports, names) -> dict:
  """Moves the per-example arrays out of the reports (which become JSON)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  per_budget = [(r.pop("natural"), r.pop("robust")) for r in reports]
  arrays = {"epsilons": np.array([r["epsilon"] for r in reports]),
            "natural": np.asarray(per_budget[0][0], bool)}
  for name in names:
    arrays[f"robust_{name}"] = np.stack(
        [np.asarray(robust[name], bool) for _, robust in per_budget])
  return arrays


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


def norms_text(reports) -> str:
  text = ""
  for r in reports:
    for n, stats in r.get("minimum_norm", {}).items():
      if stats["median_norm"] is not None:
        text += (f"\n\n{n} at epsilon {r['epsilon']:.4g}: median of the "
                 "smallest adversarial perturbation found "
                 f"{stats['median_norm']:.4g} (L-inf, over the "
                 f"{stats['num_examples']} examples it attacked; "
                 f"{stats['found']:.1%} of them have one)")
  return text


def corruptions_text(corrupted) -> str:
  if corrupted is None:
    return ""
  return ("\n\n| corruption | accuracy (mean over severities) |\n|---|---|\n"
          + "\n".join(f"| {n} | {a:.4f} |"
                      for n, a in corrupted["per_corruption"].items())
          + f"\n| **mean** | {corrupted['mean']:.4f} |")


def robustbench_summary(report: dict, loaded, request) -> dict:
  """A RobustBench-style summary of an AutoAttack preset's report (the
  fields of a RobustBench model entry that an evaluation can fill)."""
  checks = report.get("sanity_checks", [])
  return {"clean_acc": round(100 * report["natural_accuracy"], 2),
          "autoattack_acc": round(100 * report["worst_case_accuracy"], 2),
          "eps": report["epsilon"], "norm": "Linf",
          "dataset": loaded.dataset,
          "architecture": loaded.run.get("model", "unknown"),
          "number_forward_passes": 1, "preset": request.preset,
          "num_examples": report["num_examples"],
          "unreliable_evaluation": any(not c["passed"] for c in checks),
          "model_path": os.path.abspath(request.model_path)}


def write(outcome: Outcome, on_written=None) -> list:
  """Writes the reports (each atomically); `on_written(name)` after each.
  Returns the files' names."""
  from part_tf import pictures  # pylint: disable=g-import-not-at-top
  from part_tf import plots  # pylint: disable=g-import-not-at-top
  stem, folder = outcome.stem, outcome.output_dir
  files = [(f"{stem}.json", lambda p: io_utils.atomic_write_json(
      p, outcome.result)),
           (f"{stem}.md", lambda p: io_utils.atomic_write_text(
               p, outcome.text + "\n"))]
  if outcome.summary is not None:
    files.append((f"{stem}_{ROBUSTBENCH_FILE}",
                  lambda p: io_utils.atomic_write_json(p, outcome.summary)))
  if outcome.examples is not None:
    files.append((f"{stem}_examples.npz", lambda p: io_utils.atomic_write_bytes(
        p, _npz_bytes(outcome.examples))))
  files.append((f"{stem}.png", lambda p: io_utils.atomic_write_bytes(
      p, pictures.figure_png(plots.robustness_figure(
          outcome.reports, outcome.names, title=outcome.title,
          final=outcome.final if outcome.final != "AutoAttack" or
          outcome.result.get("preset") else None)))))
  os.makedirs(folder, exist_ok=True)
  for name, write_file in files:
    write_file(os.path.join(folder, name))
    if on_written is not None:
      on_written(name)
  return [name for name, _ in files]


def _npz_bytes(arrays) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def summary_lines(outcome: Outcome) -> list:
  """The lines `evaluate.py` prints after the table."""
  lines = []
  for report in outcome.reports:
    if report.get("sequential"):
      lines.append(f"eps={report['epsilon']:.4g}: " + ", ".join(
          f"{n} {report['robust_accuracy'][n]:.4f} "
          f"({report['examples_attacked'][n]} attacked, "
          f"{report['seconds'][n]:.1f} s)" for n in outcome.names)
                   + f"; {outcome.final} accuracy "
                   f"{report['worst_case_accuracy']:.4f} "
                   f"in {report['total_seconds']:.1f} s")
    for check in report.get("sanity_checks", []):
      if not check["passed"]:
        lines.append(
            f"!!! SANITY CHECK FAILED (eps={report['epsilon']:.4g}): "
            f"{check['name']}: {check['detail']}. The robust accuracies "
            "above may be overestimated (gradient masking?).")
  return lines
