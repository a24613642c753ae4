"""Trains the same setup with several methods and prints their accuracies.

The quick start (offline MNIST sample, AT and PART, about 6 minutes on 2 CPU
cores):
  python scripts/compare.py --flagfile=configs/mnist_offline.cfg \
      --model_dir=runs/quickstart

Every flag of scripts/train.py is accepted and passed on; each method trains
in `<model_dir>/<method>` (a killed comparison resumes where it stopped), and
the table is also written to `<model_dir>/comparison.md`.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from flags import parse_flags_or_exit  # pylint: disable=g-import-not-at-top
from flags import train_flags  # pylint: disable=g-import-not-at-top
from part_tf import io_utils  # pylint: disable=g-import-not-at-top

train_flags.define_flags()
flags.DEFINE_list("methods", ["at", "part"], "Methods to compare.")
FLAGS = flags.FLAGS
OWN_FLAGS = ("--model_dir", "--methods", "--method")


def table(rows, steps) -> str:
  lines = [f"| method | natural accuracy | PGD-{steps} accuracy | "
           "train seconds |", "|---|---|---|---|"]
  for method, m in rows:
    lines.append(f"| {method} | {m['natural_accuracy']:.4f} | "
                 f"{m[f'pgd{steps}_accuracy']:.4f} | "
                 f"{m['train_seconds_this_session']} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  unknown = sorted(set(FLAGS.methods) - set(train_flags.METHOD_NAMES))
  if unknown:
    sys.exit(f"error: unknown --methods {unknown}; choose from "
             f"{train_flags.METHOD_NAMES}")
  passed_on, skip_value = [], False
  for arg in sys.argv[1:]:
    if skip_value:  # the value of `--model_dir DIR` (space form)
      skip_value = False
    elif arg in OWN_FLAGS:
      skip_value = True
    elif arg.split("=")[0] not in OWN_FLAGS:
      passed_on.append(arg)
  rows = []
  for method in FLAGS.methods:
    model_dir = os.path.join(FLAGS.model_dir, method)
    print(f"=== {method}: training in {model_dir}", flush=True)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         *passed_on, f"--method={method}", f"--model_dir={model_dir}"],
        check=False)
    if result.returncode != 0:
      sys.exit(f"error: training {method} failed (exit {result.returncode})")
    with open(os.path.join(model_dir, "metrics.json")) as f:
      rows.append((method, json.load(f)))
  text = table(rows, FLAGS.eval_num_steps)
  io_utils.atomic_write_text(os.path.join(FLAGS.model_dir, "comparison.md"),
                             text + "\n")
  print(f"\n{FLAGS.dataset}, epsilon={FLAGS.epsilon:.4g}, "
        f"epsilon_low={FLAGS.epsilon_low:.4g}\n{text}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags_or_exit)
