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
cam, cam_layer, burn_in_epochs), and a method ignores the hyper-parameters
of the others (act_alpha, beta, ...: `part_tf.config.used_by`), so a sweep
over one of them trains it once per seed. Writes to `<model_dir>`:

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

import json
import os
import signal
import subprocess
import sys

from absl import app
from absl import flags

from part_tf import config as config_lib
from part_tf import presets
from part_tf import registry
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import train_flags  # pylint: disable=g-import-not-at-top

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
NOT_SWEPT = ("model_dir", "method", "seed", "flagfile", "epochs", "plugins")


def parse_method(entry):
  """(method, {weight setting: value}) of a --methods entry such as
  `at+consistency` or `part+center_loss=0.01` (a regulariser's weight
  defaults to its paper's); ValueError if malformed."""
  method, *extras = entry.split("+")
  if method not in registry.METHODS:
    raise ValueError(f"unknown method {method!r} in --methods entry "
                     f"{entry!r}; choose from {registry.METHODS.names()}")
  weights = {}
  for extra in extras:
    name, _, value = extra.partition("=")
    if name not in registry.REGULARISERS:
      raise ValueError(f"unknown regulariser {name!r} in --methods entry "
                       f"{entry!r}; choose from "
                       f"{registry.REGULARISERS.names()}")
    if not value:
      value = config_lib.paper_weight(name)
      if value is None:
        raise ValueError(f"{name} has no paper default: give its weight, "
                         f"e.g. {method}+{name}=0.1")
    try:
      weight = float(value)
    except ValueError:
      raise ValueError(f"bad weight {value!r} in --methods entry "
                       f"{entry!r}") from None
    if not weight > 0:
      raise ValueError(f"the weight of {name} in {entry!r} must be > 0")
    weights[f"{name}_weight"] = weight
  return method, weights


def passed_on(argv):
  """The command line without this script's own flags (and their values)."""
  args, skip_value = [], False
  for arg in argv:
    if skip_value:  # the value of `--model_dir DIR` (space form)
      skip_value = False
    elif arg in OWN_FLAGS:
      skip_value = True
    elif arg.split("=")[0] not in OWN_FLAGS:
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
  """[(entry, setting, seed, run folder relative to --model_dir)]."""
  runs = []
  for entry in methods:
    affected = sweep_name is not None and config_lib.used_by(
        parse_method(entry)[0], sweep_name)
    for value in (sweep_values if affected else [""]):
      for seed in seeds:
        parts = [entry] + ([f"{sweep_name}={value}"] if value else [])
        runs.append((entry, value, seed,
                     os.path.join(*parts, f"seed{seed}")))
  return runs


def expected_settings(entry, seed, sweep_name, value) -> dict:
  """What config.json holds for a run of the study (as train.py writes it:
  the run's `TrainConfig` from these flags)."""
  from part_tf import run_settings  # pylint: disable=g-import-not-at-top
  values = train_flags.flat_values()
  if sweep_name == "dataset" and value:
    # Each swept dataset's run gets that dataset's defaults.
    values.update({name: default for name, default in
                   presets.preset(value).items() if not FLAGS[name].present})
  method, weights = parse_method(entry)
  values.update(method=method, seed=seed, **weights)
  if value:
    values[sweep_name] = FLAGS[sweep_name].parser.parse(value)
  return run_settings.settings(config_lib.TrainConfig.from_flat(values))


def finished_metrics(model_dir, expected):
  """The run's metrics.json if it finished with the `expected` settings."""
  from part_tf import run_settings  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
      metrics = json.load(f)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError):
    return None
  run_settings.upgrade(config)
  changeable = set(config_lib.TrainConfig().per_machine_settings()) - {
      "epochs"}
  for name, value in expected.items():
    if name in changeable or name == "settings_version":
      continue
    if json.loads(json.dumps(value)) != config.get(name):
      return None
  return metrics if metrics.get("epochs") == expected["epochs"] else None


def _seeds():
  try:
    seeds = [int(s) for s in FLAGS.seeds] or [FLAGS.seed]
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
      raise ValueError
  except ValueError:
    raise ValueError(f"--seeds must be distinct integers >= 0, got "
                     f"{','.join(FLAGS.seeds)}") from None
  return seeds


def _check_entries(sweep_name):
  """The --methods entries, parsed; ValueError for a bad study."""
  variants = {entry: parse_method(entry) for entry in FLAGS.methods}
  if len(set(FLAGS.methods)) != len(FLAGS.methods):
    raise ValueError(f"--methods repeats a method: {FLAGS.methods}")
  clashing = [entry for entry, (_, weights) in variants.items()
              if sweep_name in weights]
  if clashing:
    raise ValueError(f"--sweep={sweep_name} and the --methods entries "
                     f"{clashing} both set {sweep_name}: sweep it on the "
                     "plain method instead")
  return variants


def _one_run(entry, value, seed, folder, sweep_name, variants, common):
  """The metrics of one run of the study: trained now, or found finished."""
  model_dir = os.path.join(FLAGS.model_dir, folder)
  metrics = finished_metrics(model_dir, expected_settings(
      entry, seed, sweep_name, value))
  if metrics is not None:
    print(f"=== {folder}: finished already", flush=True)
    return metrics, model_dir
  print(f"=== {folder}: training in {model_dir}", flush=True)
  method, weights = variants[entry]
  extra = [f"--{sweep_name}={value}"] if value else []
  extra += [f"--{name}={weight}" for name, weight in weights.items()]
  _CURRENT[:] = [folder]
  returncode = _train_run(
      [sys.executable, "-m", "part_tf_flags.cli.train", *common, *extra,
       f"--method={method}", f"--seed={seed}", f"--model_dir={model_dir}"])
  _CURRENT[:] = []
  if returncode != 0:
    raise ValueError(f"training {folder} failed (exit {returncode}); the "
                     "runs before it are kept, start the same command again "
                     "to go on")
  with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
    return json.load(f), model_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from part_tf import study  # pylint: disable=g-import-not-at-top
  try:
    seeds = _seeds()
    sweep_name, sweep_values = parse_sweep(FLAGS.sweep)
    variants = _check_entries(sweep_name)
    steps = FLAGS.eval_num_steps
    metric_names = ("natural_accuracy", f"pgd{steps}_accuracy")
    runs, logs, common = [], {}, passed_on(sys.argv[1:])
    for entry, value, seed, folder in plan(FLAGS.methods, seeds, sweep_name,
                                           sweep_values):
      metrics, model_dir = _one_run(entry, value, seed, folder, sweep_name,
                                    variants, common)
      runs.append(study.Run(entry, value, seed,
                            {m: metrics[m] for m in metric_names}))
      label = entry + (f" {sweep_name}={value}" if value else "")
      logs.setdefault(label, []).append(
          study.read_log(os.path.join(model_dir, "log.csv")))
  except ValueError as e:
    sys.exit(f"error: {e}")
  header = (f"{FLAGS.dataset}, epsilon={FLAGS.epsilon:.4g}, "
            f"epsilon_low={FLAGS.epsilon_low:.4g}, {FLAGS.epochs} epochs, "
            f"seeds {','.join(map(str, seeds))}"
            + (f", sweep {sweep_name}" if sweep_name else ""))
  burn_in = (FLAGS.burn_in_epochs if sweep_name != "burn_in_epochs" and any(
      registry.METHODS.get(m).reweighted for m, _ in variants.values())
             else None)
  text = study.write_report(
      FLAGS.model_dir, runs, logs, metric_names,
      {"natural_accuracy": "natural accuracy",
       f"pgd{steps}_accuracy": f"PGD-{steps} accuracy"},
      FLAGS.methods[0], sweep_name, header, burn_in,
      {"dataset": FLAGS.dataset, "methods": FLAGS.methods, "seeds": seeds,
       "sweep": {"name": sweep_name, "values": sweep_values}
       if sweep_name else None})
  print("\n" + text.rstrip("\n"))
  print(f"wrote {os.path.join(FLAGS.model_dir, 'study.md')}, study.json, "
        "study.png and comparison.png")


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
  run_command(main, check=train_flags.check, interrupted=_interrupted,
              doc=__doc__)


if __name__ == "__main__":
  run()
