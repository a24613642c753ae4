"""Flags of the seconds-long training runs that the script tests start, and
a way to run train.py on TFDS mock data."""

import os
import sys
import textwrap
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 2 steps per epoch on 256 offline MNIST images, 1-step PGD, a tiny
# evaluation. Tests add epochs, burn-in and what they check.
TINY_TRAIN = ["--max_train_examples=256", "--max_test_examples=64",
              "--batch_size=128", "--epsilon=0.1", "--epsilon_low=0.07",
              "--step_size=0.025", "--num_steps=1", "--eval_num_steps=1",
              "--eval_subset=32", "--optimizer=adam", "--learning_rate=1e-3"]


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
