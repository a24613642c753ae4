"""Trains a classifier with PART (or AT) and exports it.

A thin wrapper: the command lives in `flags/cli/train.py` and is installed
as `part-train` by `pip install .` (see its docstring for the usage).
"""

from part_tf_flags.cli.train import run

if __name__ == "__main__":
  run()
