"""Local paths only: part_tf reads and writes run folders with local file
operations.

A run folder relies on an `flock`, `fsync` and atomic renames so that a
crash never leaves a half file that looks valid; object stores such as GCS
or S3 offer none of these, and TensorFlow's file layer would silently turn
`gs://bucket/run` into a local folder named `gs:`. So URL-like paths are
refused with a one-line error: mount the bucket (e.g. gcsfuse) and pass the
mounted path.
"""

import re

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# Why URL-like paths are refused.
LOCAL_PATHS_ONLY = ("part_tf reads and writes local paths only (mount the "
                    "bucket, e.g. with gcsfuse, and pass the mounted path)")


def is_url(path) -> bool:
  """Whether `path` is URL-like (gs://bucket/run, ram://x, s3://...)."""
  return isinstance(path, str) and bool(_URL.match(path))


def check_local_path(name: str, path) -> None:
  """ValueError if `path` (the value of setting `name`) is URL-like."""
  if is_url(path):
    raise ValueError(f"{name} {path} is a URL: {LOCAL_PATHS_ONLY}")
