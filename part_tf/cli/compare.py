r"""Trains several methods (and seeds, and values of one setting) and reports
whether their differences are real or within noise.

The quick start (offline MNIST sample, AT and PART, 3 seeds each):
  python scripts/compare.py --flagfile=configs/mnist_offline.cfg \
      --seeds=0,1,2 --model_dir=runs/quickstart
ACT and the plug-in regularisers beside them (METHOD+REGULARISER[=WEIGHT];
consistency and center_loss default to their papers' weights):
  python scripts/compare.py --flagfile=configs/mnist_offline.cfg \
      --seeds=0,1,2 --model_dir=runs/family \
      --methods=at,part,act,part_act,at+consistency,at+center_loss,at+feature_alignment=0.1
A sweep of one setting:
  python scripts/compare.py --flagfile=configs/mnist_offline.cfg \
      --seeds=0,1,2 --sweep=epsilon_low:0.05,0.06,0.07 --model_dir=runs/sweep

Every flag of scripts/train.py is accepted and passed on. Each run trains in
`<model_dir>/<method>[/<setting>=<value>]/seed<k>`; a run that is finished
already is skipped, and a killed one resumes (the run folder's own resume),
so a killed study started again goes on where it stopped. A base method
(at, trades, mart, act) ignores PART's settings (epsilon_low, mask_rule,
cam, cam_layer, burn_in_epochs), and a method other than act and part_act
ignores ACT's (act_alpha, act_beta, act_temperature, act_natural_model), so
a sweep over one of them trains it once per seed. Writes to `<model_dir>`:

  study.md, study.json   mean ± sd over seeds per method and setting, and the
                         paired difference to the first method with a 95%
                         interval and a verdict (significant / within noise)
  study.png              the same as a chart, each seed a dot
  comparison.md          the table of study.md
  comparison.png         training loss, natural and PGD accuracy on the
                         held-out images (the validation split, or the test
                         split without one) per epoch and method (mean over
                         seeds), burn-in marked
"""

import csv
import json
import os
import signal
import subprocess
import sys

from absl import app
from absl import flags

from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import train_flags  # pylint: disable=g-import-not-at-top
from part_tf_flags.dataset_defaults import DATASET_DEFAULTS  # pylint: disable=g-import-not-at-top

train_flags.define_flags()
flags.DEFINE_list("methods", ["at", "part"], "Methods to compare; the first "
                  "is the reference of the differences. A method may add "
                  "regularisers: at+consistency, part+center_loss=0.01, "
                  "act+feature_alignment=0.1+consistency (weights default "
                  "to the paper's where there is one).")
flags.DEFINE_list("seeds", [], "Seeds to run each method with (default: "
                  "--seed alone), e.g. 0,1,2.")
flags.DEFINE_string("sweep", None, "One setting to vary, as name:v1,v2,... "
                    "e.g. epsilon_low:0.05,0.06,0.07 or "
                    "mask_rule:zscore,official,soft.")
FLAGS = flags.FLAGS
OWN_FLAGS = ("--model_dir", "--methods", "--method", "--seeds", "--seed",
             "--sweep")
# Settings that only the PART variants use.
PART_ONLY = ("epsilon_low", "mask_rule", "cam", "cam_layer", "burn_in_epochs")
# Settings that only ACT (act, part_act) uses.
ACT_ONLY = ("act_alpha", "act_beta", "act_temperature", "act_natural_model")


def _uses(method, setting):
  """Whether a --methods entry's base method uses `setting`."""
  base = parse_method(method)[0]
  if setting in PART_ONLY:
    return base in train_flags.REWEIGHTED_METHODS
  if setting in ACT_ONLY:
    return base in train_flags.CONCURRENT_METHODS
  return True
NOT_SWEPT = ("model_dir", "method", "seed", "flagfile", "epochs")


# The plug-in regularisers a --methods entry may add, with the paper's weight
# (None: the weight must be given).
REGULARISERS = {"consistency": 1.0, "feature_alignment": None,
                "center_loss": 0.003}


def parse_method(entry):
  """(base method, {weight flag: value}) of a --methods entry such as
  `at+consistency` or `part+center_loss=0.01`; ValueError if malformed."""
  method, *extras = entry.split("+")
  if method not in train_flags.METHOD_NAMES:
    raise ValueError(f"unknown method {method!r} in --methods entry "
                     f"{entry!r}; choose from {train_flags.METHOD_NAMES}")
  weights = {}
  for extra in extras:
    name, _, value = extra.partition("=")
    if name not in REGULARISERS:
      raise ValueError(f"unknown regulariser {name!r} in --methods entry "
                       f"{entry!r}; choose from {tuple(REGULARISERS)}")
    if not value:
      if REGULARISERS[name] is None:
        raise ValueError(f"{name} has no paper default: give its weight, "
                         f"e.g. {method}+{name}=0.1")
      value = REGULARISERS[name]
    try:
      weight = float(value)
    except ValueError:
      raise ValueError(f"bad weight {value!r} in --methods entry "
                       f"{entry!r}") from None
    if not weight > 0:
      raise ValueError(f"the weight of {name} in {entry!r} must be > 0")
    weights[f"{name}_weight"] = weight
  return method, weights


def _own_flag(arg):
  return arg.split("=")[0] in OWN_FLAGS


def passed_on(argv):
  """The command line without this script's own flags (and their values)."""
  args, skip_value = [], False
  for arg in argv:
    if skip_value:  # the value of `--model_dir DIR` (space form)
      skip_value = False
    elif arg in OWN_FLAGS:
      skip_value = True
    elif not _own_flag(arg):
      args.append(arg)
  return args


def parse_sweep(text):
  """(name, [values]) of --sweep, or (None, [""]); ValueError if malformed."""
  if not text:
    return None, [""]
  name, _, values = text.partition(":")
  values = [v.strip() for v in values.split(",") if v.strip()]
  if not name or not values:
    raise ValueError(f"--sweep must look like name:v1,v2, got {text!r}")
  if name in NOT_SWEPT or name not in train_flags.FLAG_NAMES:
    raise ValueError(f"--sweep: {name!r} is not a setting of train.py that "
                     "can be swept")
  for value in values:
    try:
      FLAGS[name].parser.parse(value)
    except (ValueError, flags.Error) as e:
      raise ValueError(f"--sweep: bad value {value!r} for {name}: {e}"
                       ) from None
  if len(set(values)) != len(values):
    raise ValueError(f"--sweep repeats a value: {text!r}")
  return name, values


def plan(methods, seeds, sweep_name, sweep_values):
  """[(method, setting, seed, run folder relative to --model_dir)]."""
  runs = []
  for method in methods:
    affected = sweep_name is not None and _uses(method, sweep_name)
    for value in (sweep_values if affected else [""]):
      for seed in seeds:
        parts = [method] + ([f"{sweep_name}={value}"] if value else [])
        runs.append((method, value, seed,
                     os.path.join(*parts, f"seed{seed}")))
  return runs


def finished_metrics(model_dir, expected):
  """The run's metrics.json if it finished with the `expected` settings."""
  try:
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
      metrics = json.load(f)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError):
    return None
  from part_tf import experiment  # pylint: disable=g-import-not-at-top
  experiment._upgrade(config)  # pylint: disable=protected-access
  changeable = set(experiment.TrainConfig.RESUMABLE_CHANGES) - {"epochs"}
  for name, value in config.items():
    if name in changeable or name not in expected:
      continue
    if json.loads(json.dumps(expected[name])) != value:
      return None
  return metrics if metrics.get("epochs") == expected["epochs"] else None


def expected_settings(method, seed, sweep_name, value):
  """What config.json holds for a run of the study (without data folders)."""
  settings = {name: FLAGS[name].value for name in train_flags.FLAG_NAMES
              if name != "model_dir"}
  if sweep_name == "dataset" and value:
    # Each swept dataset's run gets that dataset's defaults.
    settings.update({name: default for name, default
                     in DATASET_DEFAULTS.get(value, {}).items()
                     if not FLAGS[name].present})
  settings["lr_decay_epochs"] = [int(e) for e in settings["lr_decay_epochs"]]
  for name in ("mean", "std"):
    if settings.get(name) is not None:
      settings[name] = [float(v) for v in settings[name]]
  base, weights = parse_method(method)
  settings.update(method=base, seed=seed, **weights)
  if value:
    settings[sweep_name] = FLAGS[sweep_name].parser.parse(value)
  settings["validation_split"] = train_flags.canonical_validation_split(
      settings["validation_split"])
  return settings


def read_log(path):
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return {key: [float(r[key]) if r[key] not in ("", "nan") else float("nan")
                for r in rows] for key in (rows[0] if rows else {})}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    variants = {entry: parse_method(entry) for entry in FLAGS.methods}
  except ValueError as e:
    sys.exit(f"error: {e}")
  if len(set(FLAGS.methods)) != len(FLAGS.methods):
    sys.exit(f"error: --methods repeats a method: {FLAGS.methods}")
  try:
    seeds = [int(s) for s in FLAGS.seeds] or [FLAGS.seed]
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
      raise ValueError
  except ValueError:
    sys.exit(f"error: --seeds must be distinct integers >= 0, got "
             f"{','.join(FLAGS.seeds)}")
  try:
    sweep_name, sweep_values = parse_sweep(FLAGS.sweep)
  except ValueError as e:
    sys.exit(f"error: {e}")
  clashing = [entry for entry, (_, weights) in variants.items()
              if sweep_name in weights]
  if clashing:
    sys.exit(f"error: --sweep={sweep_name} and the --methods entries "
             f"{clashing} both set {sweep_name}: sweep it on the plain "
             "method instead")
  from part_tf import io_utils  # pylint: disable=g-import-not-at-top
  from part_tf import plots  # pylint: disable=g-import-not-at-top
  from part_tf import study  # pylint: disable=g-import-not-at-top

  # --- Runs: each in its own folder, skipped when finished ---------------------
  common = passed_on(sys.argv[1:])
  steps = FLAGS.eval_num_steps
  metric_names = ("natural_accuracy", f"pgd{steps}_accuracy")
  runs, logs = [], {}
  for method, value, seed, folder in plan(FLAGS.methods, seeds, sweep_name,
                                          sweep_values):
    model_dir = os.path.join(FLAGS.model_dir, folder)
    expected = expected_settings(method, seed, sweep_name, value)
    metrics = finished_metrics(model_dir, expected)
    if metrics is None:
      print(f"=== {folder}: training in {model_dir}", flush=True)
      extra = [f"--{sweep_name}={value}"] if value else []
      base, weights = variants[method]
      extra += [f"--{name}={weight}" for name, weight in weights.items()]
      _CURRENT[:] = [folder]
      returncode = _train_run(
          [sys.executable, "-m", "part_tf.cli.train", *common,
           *extra, f"--method={base}", f"--seed={seed}",
           f"--model_dir={model_dir}"])
      _CURRENT[:] = []
      if returncode != 0:
        sys.exit(f"error: training {folder} failed (exit "
                 f"{returncode}); the runs before it are kept, start "
                 "the same command again to go on")
      with open(os.path.join(model_dir, "metrics.json"),
                encoding="utf-8") as f:
        metrics = json.load(f)
    else:
      print(f"=== {folder}: finished already", flush=True)
    runs.append(study.Run(method, value, seed,
                          {m: metrics[m] for m in metric_names}))
    label = method + (f" {sweep_name}={value}" if value else "")
    logs.setdefault(label, []).append(
        read_log(os.path.join(model_dir, "log.csv")))

  # --- Report ---------------------------------------------------------------
  labels = {"natural_accuracy": "natural accuracy",
            f"pgd{steps}_accuracy": f"PGD-{steps} accuracy"}
  summary = study.summarize(runs, metric_names, reference=FLAGS.methods[0])
  header = (f"{FLAGS.dataset}, epsilon={FLAGS.epsilon:.4g}, "
            f"epsilon_low={FLAGS.epsilon_low:.4g}, {FLAGS.epochs} epochs, "
            f"seeds {','.join(map(str, seeds))}"
            + (f", sweep {sweep_name}" if sweep_name else ""))
  text = study.markdown(summary, metric_names, labels, sweep_name,
                        header=header + "\n")
  out = FLAGS.model_dir
  io_utils.atomic_write_json(os.path.join(out, "study.json"), {
      "dataset": FLAGS.dataset, "methods": FLAGS.methods, "seeds": seeds,
      "sweep": {"name": sweep_name, "values": sweep_values}
      if sweep_name else None,
      "runs": [{"method": r.method, "setting": r.setting, "seed": r.seed,
                **r.metrics} for r in runs], **summary})
  io_utils.atomic_write_text(os.path.join(out, "study.md"), text)
  table = text.split("\n\n")[0] if summary["differences"] else text
  io_utils.atomic_write_text(os.path.join(out, "comparison.md"),
                             table.rstrip("\n") + "\n")
  groups = [(g["method"] + (f"\n{sweep_name}={g['setting']}"
                            if g["setting"] else ""),
             {m: g[m]["values"] for m in metric_names})
            for g in summary["groups"]]
  io_utils.atomic_write_bytes(os.path.join(out, "study.png"),
                              plots.figure_png(plots.study_figure(
                                  groups, [(m, labels[m])
                                           for m in metric_names],
                                  title=header)))
  mean_logs = {label: _mean_log(parts) for label, parts in logs.items()}
  burn_in = (FLAGS.burn_in_epochs if sweep_name != "burn_in_epochs" and any(
      base in train_flags.REWEIGHTED_METHODS
      for base, _ in variants.values()) else None)
  io_utils.atomic_write_bytes(
      os.path.join(out, "comparison.png"),
      plots.figure_png(plots.training_curves_figure(
          mean_logs, burn_in, title=header + (
              f" (mean over {len(seeds)} seeds)" if len(seeds) > 1 else ""))))
  print("\n" + text.rstrip("\n"))
  print(f"wrote {os.path.join(out, 'study.md')}, study.json, study.png and "
        "comparison.png")


def _mean_log(parts):
  """The per-epoch mean of several runs' log columns (runs of equal length)."""
  import warnings  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  length = min(len(p.get("epoch", [])) for p in parts)
  keys = set.intersection(*(set(p) for p in parts))
  with warnings.catch_warnings():  # epochs without a PGD measurement: NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    return {k: list(np.nanmean([p[k][:length] for p in parts], axis=0))
            if k != "epoch" else parts[0][k][:length] for k in keys}


# The run being trained now (for Ctrl-C's last line).
_CURRENT = []
# Seconds a run stopped by Ctrl-C gets to write its last line and release
# its folder before it is killed.
_STOP_SECONDS = 60


def _train_run(command) -> int:
  """Runs one `train.py` process; returns its exit status.

  On Ctrl-C the run is stopped as Ctrl-C stops it when it runs alone
  (SIGINT; it keeps what it finished and says where it resumes), and the
  KeyboardInterrupt goes on to end the study.
  """
  process = subprocess.Popen(command)  # pylint: disable=consider-using-with
  try:
    return process.wait()
  except KeyboardInterrupt:
    # In a terminal the run got the Ctrl-C too; sent alone, pass it on.
    if process.poll() is None:
      process.send_signal(signal.SIGINT)
    try:
      process.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    raise


def _interrupted() -> str:
  if _CURRENT:
    return (f"interrupted while training {_CURRENT[0]}; the runs before it "
            "are kept and the same command goes on from it")
  return "interrupted; the finished runs are kept and the same command goes on"


def run():
  """The `part-compare` command (and `python scripts/compare.py`)."""
  # absl prints the main module's docstring as the usage: this one.
  sys.modules["__main__"].__doc__ = __doc__
  run_command(main, interrupted=_interrupted)


if __name__ == "__main__":
  run()
