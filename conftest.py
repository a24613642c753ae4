"""pytest setup: import from the repo root; drop tf.test.TestCase's
`test_session`, a context manager that pytest would list as a skipped test;
start the longest files first."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
  if not hasattr(config, "workerinput"):  # the process that runs the session
    import tempfile  # pylint: disable=g-import-not-at-top
    from tests import tiny_runs  # pylint: disable=g-import-not-at-top
    # Runs that the test processes share (tests/tiny_runs.made_once).
    os.environ[tiny_runs.SHARED_ENV] = tempfile.mkdtemp(
        prefix="part_tf_tests_")
  try:
    import part_tf_flags  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    import pytest  # pylint: disable=g-import-not-at-top
    raise pytest.UsageError(
        "part_tf is not installed in this environment: run `pip install "
        "--no-deps --no-build-isolation -e .` first (see README, Tests)")


# Seconds each long file took in a whole-suite run on the 2-core machine
# (`--durations=0`, summed per file, 2026-12-08): the order in which the
# files start. test_failures.py reads the runs that it shares with
# test_run_folder.py (tests/tiny_runs.made_once), and it should not start
# beside that file (one of the two would wait for the other's runs).
FILE_SECONDS = {
    "test_distributed.py": 108, "test_trade_off_family.py": 62,
    "test_keras_inputs.py": 61, "test_training.py": 59,
    "test_autoattack.py": 52, "test_attack_suite.py": 51,
    "test_methods.py": 43, "test_fab.py": 42, "test_doc_examples.py": 42,
    "test_part_model.py": 40, "test_run_folder.py": 39,
    "test_validation_split.py": 32, "test_apgd.py": 31,
    "test_regularisers.py": 30, "test_streaming.py": 24,
    "test_packaging.py": 23, "test_failures.py": 23, "test_square.py": 20,
    "test_dataset_defaults.py": 17, "test_study.py": 15,
    "test_console.py": 15,
}


def pytest_unconfigure(config):
  if not hasattr(config, "workerinput"):
    import shutil  # pylint: disable=g-import-not-at-top
    from tests import tiny_runs  # pylint: disable=g-import-not-at-top
    shutil.rmtree(os.environ.pop(tiny_runs.SHARED_ENV, ""),
                  ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  del config
  items[:] = [item for item in items if item.name != "test_session"]
  # Longest first (FILE_SECONDS), then the other files with slow tests, then
  # the rest; a stable sort keeps each file's order. Under `pytest -n N
  # --dist loadfile` a long file that starts last would leave the other
  # workers idle at the end.
  slow_files = {item.path for item in items
                if item.get_closest_marker("slow") is not None}
  items.sort(key=lambda item: (-FILE_SECONDS.get(item.path.name, 0),
                               item.path not in slow_files))


def pytest_runtest_teardown(item, nextitem):
  """`experiment.train` turns TensorFlow's op determinism on for its
  process; a test that trains in-process must not pass it on to the next
  test (under it, XLA refuses to compile MaxPool gradients)."""
  del item, nextitem
  if "tensorflow" in sys.modules:
    from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
    tf_config.disable_op_determinism()
