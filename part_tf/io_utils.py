"""Crash-safe file writing: a reader never sees a half-written file or folder.

Three promises, for every file a run writes:

* **Atomic.** A file is written under a temporary name, flushed to the disk,
  then renamed onto its real name; a crash leaves the old file or the new
  one, never a half file (`atomic_file`, `atomic_directory`).
* **Nothing outside.** No write follows a symbolic link: a temporary name is
  created fresh (`O_EXCL | O_NOFOLLOW`), a file appended to in place is
  opened with `O_NOFOLLOW` (`open_append`), and a link where a run writes
  is refused with a one-line `SymlinkError` naming it. A run folder that
  was unpacked or shared with a planted link cannot make a run overwrite the
  file the link points to.
* **A full disk is an error, not a crash.** Every byte reaches the disk
  through Python's own writes, so running out of space raises an `OSError`
  (errno ENOSPC) that names the file being written, and the temporary file
  is removed. (Keras writes weights through h5py, which leaves its file open
  when a write fails and then crashes the interpreter at exit: `weights_bytes`
  makes the weights file in memory instead.)
"""

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile


class SymlinkError(ValueError):
  """A path that a run writes is a symbolic link (refused, never followed)."""


def symlink_error(path: str) -> SymlinkError:
  return SymlinkError(
      f"{path} is a symbolic link: part_tf never writes through links, so "
      "that nothing outside the folder is touched (remove the link)")


def refuse_symlink(path: str) -> None:
  """SymlinkError if `path` is a symbolic link (a missing path is fine)."""
  if os.path.islink(path):
    raise symlink_error(path)


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


def _write_fd(fd: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]


def open_append(path: str, encoding: str = "utf-8"):
  """`path` opened for appending text, created if missing, never through a
  link (`O_NOFOLLOW`); lines are written as they are given (no newline
  translation).

  Raises:
    SymlinkError: `path` is a symbolic link.
  """
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise symlink_error(path) from None
    raise
  return open(fd, "a", encoding=encoding, newline="")


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and an atomic rename."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file and an atomic rename."""
  def write(tmp):
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
    try:
      _write_fd(fd, data)
    finally:
      os.close(fd)
  atomic_file(path, write)


def atomic_write_json(path: str, obj) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _remove_entry(path: str) -> None:
  """Removes the file or link at `path` (never what a link points to)."""
  with contextlib.suppress(FileNotFoundError):
    os.unlink(path)


def atomic_file(path: str, write_fn) -> None:
  """Calls `write_fn(tmp_path)` and renames the result onto `path`.

  The temporary name keeps `path`'s suffix (Keras insists on `.keras`), so
  writers that check the extension are satisfied. Anything already at the
  temporary name (a link left or planted there) is removed first, so the
  writer creates a new file. The rename replaces a link at `path` itself,
  not the file it points to.

  Raises:
    OSError: the write failed; `filename` is `path` (the temporary file is
      removed).
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  _remove_entry(tmp)
  try:
    write_fn(tmp)
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:  # the data reaches the disk before the rename
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except OSError as e:
    _remove_entry(tmp)
    if e.errno is not None:  # name the real file, not the temporary one
      raise OSError(e.errno, e.strerror or os.strerror(e.errno), path
                    ) from None
    raise
  except BaseException:
    _remove_entry(tmp)
    raise
  _fsync_dir(folder)


def weights_bytes(model) -> bytes:
  """The contents of `model.save_weights(...)`'s `.weights.h5` file, made in
  memory.

  Keras' `save_weights` writes HDF5 through h5py straight to its target and
  does not close the file when a write fails (a full disk): h5py then prints
  tracebacks from its destructors and the interpreter dies with a
  segmentation fault at exit. Made in memory, the file reaches the disk
  through `atomic_write_bytes` only, whose failure is a plain OSError. The
  bytes are exactly a Keras weights file (`model.load_weights` reads them;
  tests/test_run_folder.py checks it against `save_weights`). Uses Keras'
  own writer (`keras.src.saving.saving_lib`, pinned Keras 3.15).
  """
  from keras.src.saving import saving_lib  # pylint: disable=g-import-not-at-top
  if not model.built:
    raise ValueError(f"model {model.name!r} is not built: nothing to save")
  buffer = io.BytesIO()
  store = saving_lib.H5IOStore(buffer, mode="w")
  try:
    saving_lib._save_state(  # pylint: disable=protected-access
        model, weights_store=store, assets_store=None, inner_path="",
        visited_saveables=set())
  finally:
    store.close()
  return buffer.getvalue()


def atomic_save_weights(model, path: str) -> None:
  """`model.save_weights(path)`, atomic and safe on a full disk."""
  atomic_write_bytes(path, weights_bytes(model))


@contextlib.contextmanager
def atomic_directory(path: str):
  """Yields a temporary folder that replaces `path` only if the block succeeds.

  A crash inside the block leaves `path` as it was (and only a `.tmp-*`
  folder that no loader mistakes for the real one).

  Raises:
    SymlinkError: `path` is a symbolic link.
  """
  path = os.path.abspath(path)
  refuse_symlink(path)
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
