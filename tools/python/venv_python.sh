#!/bin/sh
# The interpreter of Bazel's Python toolchain: the workspace's .venv (or
# $PART_TF_PYTHON). Bazel runs this file through symlinks (runfiles,
# sandbox), so the workspace is found from its real path.
if [ -n "$PART_TF_PYTHON" ]; then
  exec "$PART_TF_PYTHON" "$@"
fi
here=$(dirname "$(readlink -f "$0")")
python="$here/../../.venv/bin/python3"
if [ ! -x "$python" ]; then
  echo "error: no $python: make the virtual environment first (README: python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt)" >&2
  exit 1
fi
exec "$python" "$@"
