"""Preparing a TFDS dataset: download and build it when needed and
possible, and one-line errors that say how otherwise (offline machines, a
missing manual download).
"""

import contextlib
import logging
import os
import socket
import urllib.parse

from part_tf.data.specs import DatasetSpec


def prepare(spec: DatasetSpec, data_dir: str | None = None,
            manual_dir: str | None = None, download: bool = True) -> None:
  """Makes sure the TFDS data of `spec` is prepared in `data_dir`:
  downloads and prepares it if needed (and possible), as `load` does.

  Raises:
    FileNotFoundError: the data is neither prepared nor obtainable (one
      line, saying how to prepare it).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if spec.tfds_name is None:
    return
  data_dir = data_dir and os.path.expanduser(data_dir)
  with no_missing_variant_warnings():
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if is_readable(builder, spec.train_split):
      return
  if not download:
    raise not_found(spec, data_dir, AssertionError("it is not prepared"))
  check_downloadable(spec, data_dir, manual_dir)
  config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
  try:
    builder.download_and_prepare(download_config=config)
  except FileNotFoundError as e:
    if manual_dir is None:
      raise not_found(spec, data_dir, e) from e
    message = first_line(e).removeprefix(f"{spec.tfds_name}: ")
    raise FileNotFoundError(f"Dataset {spec.name!r}: {message}") from e
  except (AssertionError, OSError, tfds.download.DownloadError) as e:
    raise not_found(spec, data_dir, e) from e


def is_readable(builder, split: str) -> bool:
  """Whether TFDS can read `split` of `builder` (prepared, or mocked by
  `tfds.testing.mock_data`) without preparing anything."""
  try:
    builder.as_dataset(split=split)
  except AssertionError:  # TFDS: "could not find data ..."
    return False
  return True


@contextlib.contextmanager
def no_missing_variant_warnings():
  """Hides TFDS' "Variant folder ... has no dataset_info.json" warning while
  it looks for data that is not prepared: the error that follows says it."""
  def keep(record):
    return "has no dataset_info.json" not in record.getMessage()
  logger = logging.getLogger("absl")
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


class Unobtainable(FileNotFoundError):
  """The data is not prepared and cannot be downloaded from here."""


# Hosts of downloads that TFDS' checksum files do not list.
_DOWNLOAD_HOSTS = {"tiny_imagenet": ("cs231n.stanford.edu",)}


def check_downloadable(spec: DatasetSpec, data_dir: str | None,
                        manual_dir: str | None) -> None:
  """Fails at once, instead of after minutes of TFDS' download retries, when
  the data would have to be downloaded from a host that cannot be reached.

  Raises:
    FileNotFoundError: saying how to prepare the data instead.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if spec.name == "tiny_imagenet":
    default_manual = os.path.join(
        data_dir or tfds.core.constants.DATA_DIR, "downloads", "manual")
    if manual_dir is not None or (os.path.isdir(default_manual)
                                  and os.listdir(default_manual)):
      return  # prepared from local files
    hosts = _DOWNLOAD_HOSTS[spec.name]
  else:
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    hosts = sorted({urllib.parse.urlparse(url).hostname
                    for url in (builder.url_infos or {})} - {None})
  for host in hosts:
    try:
      socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
      raise Unobtainable(str(not_found(spec, data_dir, OSError(
          f"it is not prepared there, and its download host {host} cannot be "
          f"reached: {e.strerror or e}")))) from None


def first_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return lines[0] if lines else type(e).__name__


def not_found(spec: DatasetSpec, data_dir: str | None,
               e: BaseException) -> FileNotFoundError:
  """The one-line error for data that is neither prepared nor obtainable."""
  where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
  if spec.name == "tiny_imagenet":
    how = ("put tiny-imagenet-200.zip (or the extracted tiny-imagenet-200/ "
           "folder) in a folder DIR and pass --manual_dir=DIR")
  else:
    how = (f"prepare it with `tfds build {spec.tfds_name} --data_dir=DIR` on "
           "a machine with internet and pass --data_dir=DIR")
  return FileNotFoundError(
      f"Dataset {spec.name!r} (TFDS {spec.tfds_name!r}) could not be found "
      f"or downloaded in {where} ({type(e).__name__}: {first_line(e)}): "
      f"{how}.")
