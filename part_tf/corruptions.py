"""Accuracy under common corruptions (Hendrycks & Dietterich): CIFAR-10-C.

Reads TFDS' `cifar10_corrupted/<corruption>_<severity>` test sets (19
corruptions x 5 severities, 10,000 images each) and reports the accuracy per
corruption and severity, per corruption (mean over severities), and the mean
over all of them.
"""

import numpy as np
import tensorflow as tf

from part_tf import evaluation


def corruption_names() -> list[str]:
  """The corruptions of TFDS' `cifar10_corrupted`, in its order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  names = []
  for config in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS:
    name = config.name.rsplit("_", 1)[0]
    if name not in names:
      names.append(name)
  return names


def corruption_accuracy(model_fn, corruptions=None, severities=(1, 2, 3, 4, 5),
                        data_dir=None, max_examples=None, batch_size=256,
                        download=True) -> dict:
  """Natural accuracy on each corrupted test set.

  Args:
    model_fn: images in [0, 1] -> logits (inference mode).
    corruptions: names (default: all of `corruption_names()`).
    severities: severities 1 to 5 to evaluate.
    data_dir: TFDS data folder.
    max_examples: evaluate the first N images of each set.
    batch_size: batch size.
    download: let TFDS download and prepare missing sets.

  Returns:
    {"accuracy": {corruption: {severity: acc}}, "per_corruption":
     {corruption: mean over severities}, "mean": mean over all sets}.

  Raises:
    ValueError: an unknown corruption or severity.
    FileNotFoundError: a set is neither prepared nor downloadable.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  known = corruption_names()
  corruptions = list(corruptions or known)
  unknown = [c for c in corruptions if c not in known]
  if unknown:
    raise ValueError(f"unknown corruptions {unknown}; choose from {known}")
  if any(s not in (1, 2, 3, 4, 5) for s in severities):
    raise ValueError(f"severities must be in 1..5, got {list(severities)}")

  # The loop behind every accuracy part_tf reports, natural accuracy only.
  natural = evaluation.Evaluator(model_fn, 0.0)
  accuracy = {}
  for name in corruptions:
    accuracy[name] = {}
    for severity in severities:
      try:
        ds = tfds.load(f"cifar10_corrupted/{name}_{severity}", split="test",
                       data_dir=data_dir, as_supervised=True,
                       download=download)
      except (AssertionError, OSError, tfds.download.DownloadError) as e:
        raise FileNotFoundError(
            f"cifar10_corrupted/{name}_{severity} is not prepared in "
            f"{data_dir or 'the default TFDS data_dir'} and could not be "
            f"downloaded ({type(e).__name__})") from e
      if max_examples:
        ds = ds.take(max_examples)
      ds = ds.batch(batch_size).map(
          lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)).prefetch(
              tf.data.AUTOTUNE)
      try:
        accuracy[name][severity] = natural(ds)["natural_accuracy"]
      except ValueError:
        raise ValueError(f"cifar10_corrupted/{name}_{severity} is empty"
                         ) from None
  per_corruption = {n: float(np.mean(list(a.values())))
                    for n, a in accuracy.items()}
  return {"accuracy": accuracy, "per_corruption": per_corruption,
          "mean": float(np.mean([v for a in accuracy.values()
                                 for v in a.values()]))}
