"""Human-readable class names of a dataset, for exports and pictures.

TinyImageNet's are "wnid words" ("n01443537 goldfish"), the first synonym of
the archive's words.txt; TFDS datasets' come from their label feature; the
digit datasets' are the digits.
"""

from part_tf.data.specs import DatasetSpec

_DIGITS = tuple(str(i) for i in range(10))
# Those of the datasets that do not need their TFDS metadata to name them.
KNOWN_NAMES = {
    "mnist_offline": _DIGITS,
    "mnist": _DIGITS,
    "svhn_cropped": _DIGITS,
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog",
                "frog", "horse", "ship", "truck"),
    "fashion_mnist": ("T-shirt", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "boot"),
}


def class_names(spec: DatasetSpec, data_dir=None) -> tuple[str, ...]:
  """The name of each class of `spec`, index by label.

  Falls back to the label numbers ("0", "1", ...) for classes the dataset's
  metadata does not name.
  """
  names = KNOWN_NAMES.get(spec.name)
  if names is None and spec.tfds_name is not None:
    names = _from_tfds(spec, data_dir)
  names = list(names or ())[:spec.num_classes]
  # Classes the metadata does not name (e.g. a partial release) keep their
  # number.
  names += [str(i) for i in range(len(names), spec.num_classes)]
  return tuple(names)


def _from_tfds(spec, data_dir):
  from part_tf.data import tfds_any  # pylint: disable=g-import-not-at-top
  from part_tf.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds_any.builder(spec, data_dir)
    names = list(builder.info.features[spec.label_key].names)
  except (ValueError, KeyError, AttributeError):
    return None
  if spec.name == "tiny_imagenet":
    try:
      words = tiny_imagenet.class_descriptions(builder)
    except ValueError:
      return names
    names = [f"{wnid} {words.get(wnid, '').split(',')[0].strip()}".strip()
             for wnid in names]
  return names
