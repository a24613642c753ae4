"""Datasets of part_tf: the registry of dataset specs (`specs.py`, no
TensorFlow), in-memory loading and tf.data pipelines (`datasets.py`, loaded
on first use of its names here), streaming (`streaming.py`) and the
TinyImageNet TFDS builder (`tiny_imagenet.py`, registered with TFDS when the
pipelines load)."""

import importlib

from part_tf.data.specs import DatasetSpec
from part_tf.data.specs import register
from part_tf.registry import DATASETS

_FROM_DATASETS = ("ArrayData", "DATASET_NAMES", "eval_dataset", "load",
                  "prepare", "resolve_spec", "shard_by_data", "spec_of_run",
                  "steps_per_epoch", "train_dataset")


def __getattr__(name):
  if name in _FROM_DATASETS:
    return getattr(importlib.import_module("part_tf.data.datasets"), name)
  if name == "tiny_imagenet":
    return importlib.import_module("part_tf.data.tiny_imagenet")
  raise AttributeError(f"module 'part_tf.data' has no attribute {name!r}")


__all__ = ["ArrayData", "DATASET_NAMES", "DATASETS", "DatasetSpec",
           "eval_dataset", "load", "prepare", "register", "resolve_spec",
           "shard_by_data", "spec_of_run", "steps_per_epoch", "tiny_imagenet",
           "train_dataset"]
