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
# (`--durations=0`, summed per file): the order in which the files start.
# test_failures.py: its 77 s less the runs that it shares with
# test_run_folder.py (tests/tiny_runs.made_once), and it should not start
# beside that file (one of the two would wait for the other's runs).
FILE_SECONDS = {
    "test_distributed.py": 170, "test_training.py": 116,
    "test_trade_off_family.py": 110, "test_autoattack.py": 100,
    "test_doc_examples.py": 86, "test_keras_inputs.py": 86,
    "test_fab.py": 80, "test_failures.py": 60, "test_run_folder.py": 75,
    "test_attack_suite.py": 71, "test_methods.py": 69, "test_study.py": 68,
    "test_part_model.py": 67, "test_validation_split.py": 56,
    "test_streaming.py": 50, "test_apgd.py": 47, "test_regularisers.py": 41,
    "test_export.py": 34, "test_packaging.py": 32, "test_square.py": 31,
    "test_console.py": 27, "test_dataset_defaults.py": 22,
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
