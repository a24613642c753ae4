"""Draws what PART does to a few test images: image | CAM | eps_map |

A thin wrapper: the command lives in `flags/cli/visualize.py` and is installed
as `part-visualize` by `pip install .` (see its docstring for the usage).
"""

from part_tf_flags.cli.visualize import run

if __name__ == "__main__":
  run()
