"""Trains several methods (and seeds, and values of one setting) and reports

A thin wrapper: the command lives in `flags/cli/compare.py` and is installed
as `part-compare` by `pip install .` (see its docstring for the usage).
"""

from part_tf_flags.cli.compare import run

if __name__ == "__main__":
  run()
