"""pytest setup: import from the repo root; drop tf.test.TestCase's
`test_session`, a context manager that pytest would list as a skipped test."""

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
