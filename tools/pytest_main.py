"""Runs one test file with pytest, as `python -m pytest FILE` does: the
main of every Bazel `py_test` (see BUILD), so that the tests run exactly as
under the README's pytest command (conftest.py, pytest.ini)."""

import os
import sys

import pytest

if __name__ == "__main__":
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.exit(pytest.main([*sys.argv[1:], "-q", "-p", "no:cacheprovider",
                        "--rootdir", root, "-c",
                        os.path.join(root, "pytest.ini")]))
