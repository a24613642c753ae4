"""The validation split: training images held out to choose the best epoch.

The most robust epoch of a run (its `best/` classifier) is chosen on these
images, never on the test split, which then reports the chosen model once.

The held-out images are one contiguous block of the training split, at an
offset drawn from the run's seed: `[offset, offset + size)`. A block (not a
scattered sample) is what TFDS can read as a split slice, so streamed and
in-memory input hold out exactly the same images, and a resumed run holds
out the same images again. TFDS writes every split in a hashed, shuffled
order (and the offline MNIST sample is a seeded random split), so a block is
a random sample of the split; `describe` counts its classes so that a
dataset stored in class order would show at once.

Example:
  size = validation.size_for("auto", num_train=50_000, selects=True)  # 1000
  block = validation.Block.choose(num_train=50_000, size=size, seed=0)
  train, held_out = block.split_arrays(train)
"""

import dataclasses

import numpy as np

from part_tf.data.datasets import ArrayData
from part_tf.parsing import canonical_validation_split  # pylint: disable=unused-import
from part_tf.parsing import parse_validation_split

# `--validation_split=auto`: 2% of the training images, at most 1,000.
AUTO_FRACTION = 0.02
AUTO_MAX = 1000
# The fewest held-out images that choose an epoch: below this, the accuracy
# measured on them is too coarse to tell epochs apart (its standard error
# at 100 images is up to 5 points, and a point is one image), and ties are
# common. A split must also hold at least one image per class.
MIN_SIZE = 100
# "auto" holds out its minimum only where that leaves 90% to train on.
_AUTO_MAX_SHARE = 0.1


def minimum_size(num_classes: int | None = None) -> int:
  """The fewest held-out images that may choose the best epoch."""
  return max(MIN_SIZE, num_classes or 0)


def size_for(setting, num_train: int, selects: bool = True,
             num_classes: int | None = None,
             allow_small: bool = False) -> int:
  """Images to hold out of `num_train` for `--validation_split=setting`.

  Args:
    setting: "auto", a count (int >= 0) or a fraction in (0, 1), or their
      text (`parse_validation_split` reads it).
    num_train: training images available (after `--max_train_examples`).
    selects: whether the run chooses among epochs (`--eval_every` > 0);
      "auto" holds out nothing when it does not: there is nothing to choose.
    num_classes: classes of the dataset (a split needs one image per class).
    allow_small: accept a split smaller than `minimum_size`.

  "auto" is 2% of the training images, at most 1,000 and at least
  `minimum_size`; where that minimum would take more than a tenth of the
  training images, it holds out none (no epoch is chosen).

  Raises:
    ValueError: a setting that is none of these, holds out fewer than
      `minimum_size` images (without `allow_small`), or leaves no image to
      train on.
  """
  setting = parse_validation_split(setting)
  least = minimum_size(num_classes)
  if setting == "auto":
    size = 0
    if selects and least <= _AUTO_MAX_SHARE * num_train:
      size = min(max(int(AUTO_FRACTION * num_train), least), AUTO_MAX)
  elif isinstance(setting, float):
    size = max(1, int(round(setting * num_train)))
  else:
    size = setting
  if size >= num_train:
    raise ValueError(f"--validation_split={setting} holds out {size} of the "
                     f"{num_train} training images, leaving none to train on")
  if 0 < size < least and not allow_small:
    raise ValueError(
        f"--validation_split={setting} holds out {_images(size)}, too few to "
        f"choose the most robust epoch (at least {least}: {MIN_SIZE} and one "
        "per class); hold out more, use --validation_split=0 to choose no "
        "epoch, or pass --allow_small_validation")
  return size


def _images(n):
  return f"{n} image" + ("" if n == 1 else "s")


@dataclasses.dataclass(frozen=True)
class Block:
  """Held-out images `[offset, offset + size)` of a training split of
  `num_train` images (the first `num_train` when it is capped)."""

  num_train: int
  offset: int
  size: int

  @classmethod
  def choose(cls, num_train: int, size: int, seed: int) -> "Block":
    """The block of `size` images for `seed` (offset uniform, seeded)."""
    if size <= 0:
      return cls(num_train, 0, 0)
    offset = int(np.random.default_rng([seed, 0x7A1]).integers(
        0, num_train - size + 1))
    return cls(num_train, offset, size)

  @property
  def end(self) -> int:
    return self.offset + self.size

  def split_arrays(self, data: ArrayData) -> tuple[ArrayData, ArrayData]:
    """(training images without the block, the block) of in-memory data
    holding the split's first `num_train` images in file order."""
    if len(data.labels) != self.num_train:
      raise ValueError(f"the validation block is for {self.num_train} "
                       f"training images, got {len(data.labels)}")
    keep = np.r_[0:self.offset, self.end:self.num_train]
    return (ArrayData(data.images[keep], data.labels[keep]),
            ArrayData(data.images[self.offset:self.end],
                      data.labels[self.offset:self.end]))

  def tfds_splits(self, split: str) -> tuple[str, str]:
    """(training, validation) TFDS split strings of the same images, e.g.
    ("train[:300]+train[1300:50000]", "train[300:1300]")."""
    train = []
    if self.offset:
      train.append(f"{split}[:{self.offset}]")
    if self.end < self.num_train:
      train.append(f"{split}[{self.end}:{self.num_train}]")
    return "+".join(train), f"{split}[{self.offset}:{self.end}]"

  def as_dict(self) -> dict:
    return {"num_train": self.num_train, "offset": self.offset,
            "size": self.size}


def describe(block: Block, labels: np.ndarray, num_classes: int) -> str:
  """One line about the held-out block and its classes."""
  classes = len(np.unique(labels))
  line = (f"validation: {block.size} training images held out (block "
          f"{block.offset}-{block.end} of {block.num_train}, "
          f"{classes} of {num_classes} classes) to choose the most robust "
          "epoch; the test split is not used to choose")
  if classes == 1 and num_classes > 1 and block.size >= 10:
    line += (" (WARNING: one class only: is the split stored in class "
             "order? choose another --seed or a larger --validation_split)")
  return line
