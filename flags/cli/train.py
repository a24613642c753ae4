r"""Trains a classifier with PART (or AT) and exports it.

Quick run on the offline MNIST sample (no network):
  python scripts/train.py --model_dir=runs/mnist_part
The reference code's setup on CIFAR-10, SVHN or TinyImageNet (GPU; its
ResNet-18 on raw pixels, the dataset's budgets, SGD, 80 epochs with 20 of
burn-in and the rate divided by 10 in the last):
  python scripts/train.py --dataset=cifar10 --model_dir=runs/cifar10_part
  python scripts/train.py --dataset=tiny_imagenet --manual_dir=DIR \
      --model_dir=runs/tiny_part
Each --dataset brings its own defaults (printed in one line at the start);
flags given on the command line or in a flagfile win.
"""

import sys

from absl import app
from absl import flags

from part_tf_flags import one_line  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import dataset_defaults  # pylint: disable=g-import-not-at-top
from part_tf_flags import train_flags  # pylint: disable=g-import-not-at-top

train_flags.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = train_flags.config_from_flags()  # checked while parsing
  # Imported here so that flag errors come back before TensorFlow loads.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from part_tf import distribution  # pylint: disable=g-import-not-at-top
  from part_tf import experiment  # pylint: disable=g-import-not-at-top
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


def _interrupted() -> str:
  from part_tf import run_folder  # pylint: disable=g-import-not-at-top
  return run_folder.interrupted_line(FLAGS.model_dir, FLAGS.epochs)


def run():
  """The `part-train` command (and `python scripts/train.py`)."""
  run_command(main, check=train_flags.check, interrupted=_interrupted,
              doc=__doc__)


if __name__ == "__main__":
  run()
