"""pytest setup: import from the repo root; drop tf.test.TestCase's
`test_session`, a context manager that pytest would list as a skipped test;
run the files with slow tests first."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
  del config
  try:
    import part_tf_flags  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    import pytest  # pylint: disable=g-import-not-at-top
    raise pytest.UsageError(
        "part_tf is not installed in this environment: run `pip install "
        "--no-deps --no-build-isolation -e .` first (see README, Tests)")


def pytest_collection_modifyitems(config, items):
  del config
  items[:] = [item for item in items if item.name != "test_session"]
  # Files with slow tests first (a stable sort keeps each file's order):
  # under `pytest -n N --dist loadfile` a long file that starts last would
  # leave the other workers idle at the end.
  slow_files = {item.path for item in items
                if item.get_closest_marker("slow") is not None}
  items.sort(key=lambda item: item.path not in slow_files)


def pytest_runtest_teardown(item, nextitem):
  """`experiment.train` turns TensorFlow's op determinism on for its
  process; a test that trains in-process must not pass it on to the next
  test (under it, XLA refuses to compile MaxPool gradients)."""
  del item, nextitem
  if "tensorflow" in sys.modules:
    from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
    tf_config.disable_op_determinism()
