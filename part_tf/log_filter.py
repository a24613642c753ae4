"""Keeps TensorFlow's C++ log lines out of a script's stderr.

TensorFlow's C++ runtime writes INFO and WARNING lines straight to file
descriptor 2: oneDNN notices, "Could not find cuda drivers", CPU feature
hints, the absl "All log messages before absl::InitializeLog()" banner, and
an E-level "failed call to cuInit" on machines without a GPU. No environment
variable silences all of them (`TF_CPP_MIN_LOG_LEVEL` misses the ones logged
while the libraries load), so the scripts route stderr through a filter.

`install()` forks a small filter process before TensorFlow is imported and
points descriptor 2 at a pipe into it. The filter drops those lines and
forwards everything else (Python tracebacks, warnings, absl log lines, C++
ERROR and FATAL lines other than the known harmless ones) unchanged. Because
it is a separate process, a crash of the script, even SIGKILL, loses nothing:
the filter drains the pipe and exits when the last writer is gone.

Importing this module does not import TensorFlow.
"""

import os
import re
import signal
import sys

# A C++ absl/TF log line: "I0000 00:00:1795559891.672166   19442 port.cc:153] "
# or the older "2025-09-17 14:44:05.157831: I external/.../x.cc:32] ".
_CPP_LINE = re.compile(
    rb"^(?:(?P<level>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<old_level>[IWEF]) )"
    rb"(?P<source>\S+?\.(?:cc|h|cpp)):\d+\] ")
# C++ ERROR lines that say nothing is wrong: no GPU on this machine, or a
# CUDA plugin registered twice.
_HARMLESS_ERRORS = re.compile(
    rb"failed call to cuInit|Unable to register cu\w+ factory")
_NOISE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are "
    b"written to STDERR",
    # Second line of cpu_feature_guard.cc's INFO message.
    b"To enable the following instructions:",
)


def is_noise(line: bytes) -> bool:
  """Whether `line` (one line of stderr, bytes) is dropped by the filter."""
  if line.startswith(_NOISE):
    return True
  match = _CPP_LINE.match(line)
  if match is None:
    return False
  level = match.group("level") or match.group("old_level")
  if level in (b"I", b"W"):
    return True
  return level == b"E" and _HARMLESS_ERRORS.search(line) is not None


def _may_be_noise(start: bytes) -> bool:
  """Whether a line starting with `start` could still turn out to be noise
  (C++ log lines start with a level letter or a date; the others are fixed
  texts)."""
  if not start:
    return True
  if start[:1] in b"IWEF0123456789":
    return True
  return any(text.startswith(start[:len(text)]) for text in _NOISE)


def _run_filter(read_fd: int, write_fd: int) -> None:
  """The filter process: copies lines from `read_fd` to `write_fd`, minus
  noise, until end of file.

  A line that cannot be noise is passed on before its end arrives, so that
  progress bars redrawn with `\\r` (tqdm) show as they are drawn.
  """
  # Ctrl-C reaches the whole process group: the filter must outlive the
  # script's last words, so it ignores it and ends at end of file.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  pending = b""      # the start of a line not yet judged
  passing = False    # the current line was judged: it goes out as it comes
  while True:
    try:
      chunk = os.read(read_fd, 65536)
    except InterruptedError:
      continue
    if not chunk:
      break
    out = []
    while chunk:
      end = chunk.find(b"\n")
      piece, chunk = ((chunk, b"") if end < 0 else
                      (chunk[:end + 1], chunk[end + 1:]))
      if passing:
        out.append(piece)
      else:
        pending += piece
        if pending.endswith(b"\n"):
          if not is_noise(pending[:-1]):
            out.append(pending)
          pending = b""
          continue
        if not _may_be_noise(pending):
          out.append(pending)
          pending, passing = b"", True
      if piece.endswith(b"\n"):
        passing = False
    _write_all(write_fd, b"".join(out))
  if pending and not is_noise(pending):
    _write_all(write_fd, pending)


def _write_all(fd: int, data: bytes) -> None:
  while data:
    try:
      data = data[os.write(fd, data):]
    except InterruptedError:
      continue
    except OSError:  # the reader of our stderr is gone
      return


_installed = False


def install() -> None:
  """Routes this process's stderr (descriptor 2) through the filter.

  Call it once, before TensorFlow is imported. Child processes inherit the
  filtered stderr. Does nothing where `os.fork` is missing.
  """
  global _installed
  if _installed or not hasattr(os, "fork"):
    return
  sys.stderr.flush()
  read_fd, write_fd = os.pipe()
  real_stderr = os.dup(2)
  pid = os.fork()
  if pid == 0:  # the filter
    try:
      os.close(write_fd)
      os.dup2(real_stderr, 2)  # its own messages, if any, go out directly
      _run_filter(read_fd, real_stderr)
    finally:
      os._exit(0)  # pylint: disable=protected-access
  os.close(read_fd)
  os.close(real_stderr)
  os.dup2(write_fd, 2)
  os.close(write_fd)
  _installed = True
