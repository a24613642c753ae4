"""Datasets of part_tf: registry, in-memory loading and tf.data pipelines."""

from part_tf.data.datasets import ArrayData
from part_tf.data.datasets import DATASET_NAMES
from part_tf.data.datasets import DATASETS
from part_tf.data.datasets import DatasetSpec
from part_tf.data.datasets import eval_dataset
from part_tf.data.datasets import prepare
from part_tf.data.datasets import resolve_spec
from part_tf.data.datasets import shard_by_data
from part_tf.data.datasets import spec_of_run
from part_tf.data.datasets import load
from part_tf.data.datasets import steps_per_epoch
from part_tf.data.datasets import train_dataset
# Registers the TFDS builder "tiny_imagenet".
from part_tf.data import tiny_imagenet  # pylint: disable=g-bad-import-order

__all__ = [
    "ArrayData",
    "DATASET_NAMES",
    "DATASETS",
    "DatasetSpec",
    "eval_dataset",
    "load",
    "prepare",
    "resolve_spec",
    "shard_by_data",
    "spec_of_run",
    "steps_per_epoch",
    "tiny_imagenet",
    "train_dataset",
]
