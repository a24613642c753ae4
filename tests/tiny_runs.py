"""Flags of the seconds-long training runs that the script tests start, and
a way to run train.py on TFDS mock data."""

import fcntl
import os
import shutil
import sys
import tempfile
import textwrap
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 2 steps per epoch on 256 offline MNIST images, 1-step PGD, a tiny
# evaluation, no TensorBoard pictures (test_pictures tests them, and
# test_distributed's runs draw some). Tests add epochs, burn-in and what
# they check.
TINY_TRAIN = ["--max_train_examples=256", "--max_test_examples=64",
              "--batch_size=128", "--epsilon=0.1", "--epsilon_low=0.07",
              "--step_size=0.025", "--num_steps=1", "--eval_num_steps=1",
              "--eval_subset=32", "--optimizer=adam", "--learning_rate=1e-3",
              "--image_count=0"]


# The folder that the processes of one pytest run share (set by conftest.py
# in the process that starts the xdist workers, which inherit it).
SHARED_ENV = "PART_TF_TESTS_SHARED"


def made_once(name, make):
  """The folder `name`, made by `make(folder)` once per pytest run and
  shared by its worker processes: the first to ask makes it, the others
  wait for it (a file lock) and read it. Tests copy what they change."""
  root = os.environ.get(SHARED_ENV)
  if not root:
    root = os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="part_tf_tests_")
  folder = os.path.join(root, name)
  with open(folder + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(folder, ".made")):
      shutil.rmtree(folder, ignore_errors=True)  # what a failed make left
      os.makedirs(folder)
      make(folder)
      with open(os.path.join(folder, ".made"), "w"):
        pass
  return folder


def train_on_mock_tfds(args, num_examples, timeout=300):
  """`scripts/train.py ARGS` in a subprocess, with TFDS' mock data (made up
  examples of any registered dataset) in place of the real data."""
  code = textwrap.dedent(f"""
      import runpy, sys
      import tensorflow_datasets as tfds
      sys.argv = ["train.py", *{list(args)!r}]
      with tfds.testing.mock_data(num_examples={num_examples}):
        runpy.run_path("scripts/train.py", run_name="__main__")
      """)
  return commands.run([sys.executable, "-c", code], cwd=ROOT,
                      capture_output=True, text=True, timeout=timeout,
                      check=False)
