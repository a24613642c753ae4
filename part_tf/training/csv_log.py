"""`log.csv`: one row per epoch, appended, never written through a link.

The columns are Keras' `CSVLogger`'s (`epoch`, then the epoch logs' keys
sorted, with `val_` twins when there are no validation logs), so runs
written by earlier versions resume into the same columns. Unlike Keras'
logger, every line ends in LF (Keras writes CRLF, the `csv` module's
default), the file is opened with `O_NOFOLLOW` (`io_utils.open_append`),
and each row is on the disk (fsync) before the callbacks after it, such as
the epoch's backup, run.
"""

import collections
import csv
import os

import keras
import numpy as np

from part_tf import io_utils


class CSVLog(keras.callbacks.Callback):
  """Appends each epoch's logs to a CSV file.

  Args:
    path: the CSV file; a header is written when it is empty or missing.
  """

  def __init__(self, path: str):
    super().__init__()
    self.path = path
    self._file = None
    self._writer = None
    self._keys = None
    self._header = True

  def on_train_begin(self, logs=None):
    self._close()
    self._file = io_utils.open_append(self.path)
    self._header = os.fstat(self._file.fileno()).st_size == 0
    self._writer = None
    self._keys = None

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    if self._keys is None:
      self._keys = sorted(logs)
      if self._keys and not any(k.startswith("val_") for k in self._keys):
        self._keys += [f"val_{k}" for k in self._keys]
    if self._writer is None:
      self._writer = csv.DictWriter(self._file, ["epoch", *self._keys],
                                    lineterminator="\n")
      if self._header:
        self._writer.writeheader()
    row = collections.OrderedDict(epoch=epoch)
    row.update((k, _cell(logs.get(k, "NA"))) for k in self._keys)
    self._writer.writerow(row)
    self._file.flush()
    os.fsync(self._file.fileno())

  def on_train_end(self, logs=None):
    self._close()

  def _close(self):
    if self._file is not None and not self._file.closed:
      self._file.close()
    self._file = None
    self._writer = None


def _cell(value):
  """A log value as Keras' CSVLogger writes it."""
  if isinstance(value, str):
    return value
  if isinstance(value, collections.abc.Iterable) and not (
      isinstance(value, np.ndarray) and value.ndim == 0):
    return f'"[{", ".join(map(str, value))}]"'
  return value
