"""Crash-safe file writing: a reader never sees a half-written file or folder."""

import contextlib
import json
import os
import shutil
import tempfile


def _fsync_dir(path):
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and an atomic rename."""
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  atomic_file(path, write)


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file and an atomic rename."""
  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
  atomic_file(path, write)


def atomic_write_json(path: str, obj) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_file(path: str, write_fn) -> None:
  """Calls `write_fn(tmp_path)` and renames the result onto `path`.

  The temporary name keeps `path`'s suffix (Keras insists on
  `.weights.h5`), so writers that check the extension are satisfied.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  try:
    write_fn(tmp)
    with open(tmp, "rb") as f:  # the data reaches the disk before the rename
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_dir(folder)


@contextlib.contextmanager
def atomic_directory(path: str):
  """Yields a temporary folder that replaces `path` only if the block succeeds.

  A crash inside the block leaves `path` as it was (and only a `.tmp-*`
  folder that no loader mistakes for the real one).
  """
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(path)}-")
  os.chmod(tmp, 0o755)  # mkdtemp makes it private; exports are for serving.
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = None
  if os.path.exists(path):
    old = tempfile.mkdtemp(dir=parent, prefix=f".old-{os.path.basename(path)}-")
    os.rmdir(old)
    os.replace(path, old)
  os.replace(tmp, path)
  _fsync_dir(parent)
  if old:
    shutil.rmtree(old, ignore_errors=True)
