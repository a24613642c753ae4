"""Speed of PART against AT, and of batched CAM budgets against per-image CAMs.

A thin wrapper: the command lives in `flags/cli/benchmark.py` and is installed
as `part-benchmark` by `pip install .` (see its docstring for the usage).
"""

from part_tf_flags.cli.benchmark import run

if __name__ == "__main__":
  run()
