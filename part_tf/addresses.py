"""`host:port` addresses of a job's tasks and services: reading them, and
asking whether anything answers there or holds a port, without TensorFlow.

A multi-worker job or a tf.data service that cannot start waits in
TensorFlow's C++ runtime without a word; these checks let `part_tf` name the
address that is missing or taken before that (see `part_tf.distribution`).
"""

import contextlib
import socket
import time


def split(address: str) -> tuple[str, int]:
  """The host and port of "host:port", "[v6 address]:port" or
  "grpc://host:port".

  Raises:
    ValueError: `address` names no port.
  """
  text = address.strip().split("://", 1)[-1].rstrip("/")
  host, _, port = text.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"{address!r} is not an address like host:5000")
  return host.strip("[]"), int(port)


def answers(address: str, timeout: float = 1.0) -> bool:
  """Whether a TCP connection to `address` is accepted within `timeout`
  seconds (something listens there)."""
  host, port = split(address)
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def wait_until_answers(address: str, timeout: float) -> bool:
  """Whether `address` answers (see `answers`) within `timeout` seconds,
  asking every quarter of a second."""
  deadline = time.monotonic() + timeout
  while True:
    left = deadline - time.monotonic()
    if answers(address, timeout=max(0.05, min(1.0, left))):
      return True
    if left <= 0:
      return False
    time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def port_taken(port: int) -> OSError | None:
  """Why a server could not listen on `port` of every interface, as
  TensorFlow's gRPC server does ("0.0.0.0:port"), or None if it could.

  The port is bound and released at once, with SO_REUSEADDR like gRPC, so
  that connections closing on it (TIME_WAIT) do not count as taken.
  """
  with contextlib.closing(socket.socket(socket.AF_INET,
                                        socket.SOCK_STREAM)) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind(("0.0.0.0", port))
    except OSError as e:
      return e
  return None
