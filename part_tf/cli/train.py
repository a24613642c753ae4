r"""Trains a classifier with PART (or AT) and exports it.

Quick run on the offline MNIST sample (no network):
  python scripts/train.py --model_dir=runs/mnist_part
The paper's setup on CIFAR-10, SVHN or TinyImageNet (GPU; ResNet-18, the
dataset's budgets, SGD, 80 epochs with decay after 60 and 70):
  python scripts/train.py --dataset=cifar10 --model_dir=runs/cifar10_part
  python scripts/train.py --dataset=tiny_imagenet --manual_dir=DIR \
      --model_dir=runs/tiny_part
Each --dataset brings its own defaults (printed in one line at the start);
flags given on the command line or in a flagfile win.
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags

from part_tf_flags import one_line  # pylint: disable=g-import-not-at-top
from part_tf_flags import parse_flags_or_exit  # pylint: disable=g-import-not-at-top
from part_tf_flags import dataset_defaults  # pylint: disable=g-import-not-at-top
from part_tf_flags import train_flags  # pylint: disable=g-import-not-at-top

train_flags.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that flag errors come back before TensorFlow loads.
  from part_tf import experiment  # pylint: disable=g-import-not-at-top
  values = {f.name: FLAGS[f.name].value
            for f in dataclasses.fields(experiment.TrainConfig)}
  values["lr_decay_epochs"] = tuple(int(e) for e in values["lr_decay_epochs"])
  for name in ("mean", "std"):
    if values[name] is not None:
      values[name] = tuple(float(v) for v in values[name])
  config = experiment.TrainConfig(**values)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from part_tf import distribution  # pylint: disable=g-import-not-at-top
  try:
    line = dataset_defaults.defaults_line()
    if line and distribution.cluster().is_chief:  # only the chief prints
      print(line, flush=True)
    experiment.train(config, out=sys.stdout)
  except (ValueError, OSError) as e:
    _exit_with(f"error: {one_line(e)}")
  except tf.errors.OpError as e:  # e.g. a worker of the job is gone
    first = (e.message.strip().splitlines() or [""])[0][:300]
    _exit_with(f"error: {type(e).__name__}: {first}")


def _exit_with(line):
  """Exits with status 1 after `line` on stderr, the last line there (what
  TensorFlow's multi-worker runtime logs at exit is dropped)."""
  from part_tf import multi_worker  # pylint: disable=g-import-not-at-top
  print(line, file=sys.stderr, flush=True)
  sys.stdout.flush()
  multi_worker.quiet_teardown()
  sys.exit(1)


def run():
  """The `part-train` command (and `python scripts/train.py`)."""
  # absl prints the main module's docstring as the usage: this one.
  sys.modules["__main__"].__doc__ = __doc__
  app.run(main, flags_parser=parse_flags_or_exit)


if __name__ == "__main__":
  run()
