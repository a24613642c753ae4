"""pytest setup: import from the repo root; drop tf.test.TestCase's
`test_session`, a context manager that pytest would list as a skipped test."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config, items):
  del config
  items[:] = [item for item in items if item.name != "test_session"]
