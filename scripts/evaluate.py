"""Evaluates the robustness of a trained classifier with an attack suite.

A thin wrapper: the command lives in `flags/cli/evaluate.py` and is installed
as `part-evaluate` by `pip install .` (see its docstring for the usage).
"""

from part_tf_flags.cli.evaluate import run

if __name__ == "__main__":
  run()
