"""Trains several methods (and seeds, and values of one setting) and reports

A thin wrapper: the command lives in `part_tf/cli/compare.py` and is installed
as `part-compare` by `pip install .` (see its docstring for the usage).
"""

from part_tf.cli.compare import run

if __name__ == "__main__":
  run()
