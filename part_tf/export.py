"""Export the robust classifier (not the training wrapper) for serving.

The SavedModel has two signatures, each returning `logits`, `probabilities`,
`classes` (the predicted label) and `class_name` (its name, a string such as
"n01443537 goldfish" for TinyImageNet or "cat" for CIFAR-10):

* `serving_default`: `images`, float32 [None, H, W, C] with values in [0, 1];
* `serving_uint8`: `images`, uint8 [None, H, W, C] with values in 0..255.

The input contract is checked inside the exported graph, so TF Serving (which
runs the graph only) enforces it as well as `tf.saved_model.load`:

* an image of another shape than the classifier's [H, W, C] is refused by
  both signatures with an InvalidArgument error ("Shape of tensor images
  [1,29,29,1] is not compatible with expected shape [?,28,28,1]"). A loaded
  signature does not check the shape it is fed against the one it declares,
  and TF Serving does not either, so without this check a model whose
  pooling floors 29 to the 28's size answered for a 29x29 image;
* `serving_default` refuses NaN, infinities and values outside [0, 1] (a
  client sending 0..255 floats) with an InvalidArgument error that says
  "pixels must be floats in [0, 1]; use serving_uint8 for 0-255 images",
  instead of confident answers about garbage. The check is one reduction
  over the batch, made before the classifier runs: about 0.2 ms for 256
  images of 28x28, about 1% of the small CNN's serving time and far less of
  ResNet-18's (`scripts/benchmark.py --serving_only`). `serving_uint8`
  needs none: uint8 is 0..255 by type.

A request with no images gets outputs with no rows.

Load it with `tf.saved_model.load(path).signatures["serving_default"]`, or
inspect it with `saved_model_cli show --dir PATH --all`; `served_logits`
gives the logits function that the evaluation attacks use.
"""

import keras
import tensorflow as tf

from part_tf import io_utils
from part_tf.paths import check_local_path

PIXEL_RANGE_MESSAGE = ("pixels must be floats in [0, 1]; use serving_uint8 "
                       "for 0-255 images")


def checked_shape(images: tf.Tensor, shape) -> tf.Tensor:
  """`images`, after a graph op that refuses any other shape at run time.

  Args:
    images: the request's images.
    shape: the declared shape, [None, H, W, C].

  Returns:
    `images`; running it raises InvalidArgumentError when their shape is not
    `shape`.
  """
  return tf.ensure_shape(images, shape)


def checked_pixels(images: tf.Tensor) -> tf.Tensor:
  """`images`, after a graph op that refuses values outside [0, 1].

  NaN fails every comparison, so 0 <= x <= 1 also refuses NaN and the
  infinities. An empty batch passes.

  Args:
    images: float32 images.

  Returns:
    `images`; running it raises InvalidArgumentError with
    `PIXEL_RANGE_MESSAGE` when a value is not a float in [0, 1].
  """
  in_range = tf.reduce_all((images >= 0.0) & (images <= 1.0))
  check = tf.debugging.Assert(in_range, [PIXEL_RANGE_MESSAGE],
                              name="pixels_in_0_1")
  with tf.control_dependencies([check]):
    return tf.identity(images)


def export_classifier(classifier: keras.Model, export_dir: str,
                      class_names=None, *, check_inputs: bool = True) -> str:
  """Writes `classifier` as a SavedModel to `export_dir`, atomically.

  Args:
    classifier: functional model, images in [0, 1] -> logits.
    export_dir: target folder; an existing export there is replaced only once
      the new one is completely written.
    class_names: the name of each class (`part_tf.data.class_names`);
      None: the label numbers as text.
    check_inputs: False leaves out the in-graph checks of the images' shape
      and values (only to measure their cost: `scripts/benchmark.py`).

  Returns:
    `export_dir`.
  """
  check_local_path("export_dir", export_dir)
  shape = [None, *classifier.input_shape[1:]]
  num_classes = classifier.output_shape[-1]
  names = [str(n) for n in (class_names if class_names is not None
                            else range(num_classes))]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for a classifier of "
                     f"{num_classes} classes")

  def outputs(images):
    # An empty request gets empty outputs: TF's CPU convolutions fail on a
    # batch of zero images.
    logits = tf.cond(
        tf.shape(images)[0] > 0,
        lambda: tf.cast(classifier(images, training=False), tf.float32),
        lambda: tf.zeros([0, num_classes], tf.float32))
    classes = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {"logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": classes,
            "class_name": tf.gather(tf.constant(names, tf.string), classes)}

  def serve_floats(images):
    if check_inputs:
      images = checked_pixels(checked_shape(images, shape))
    return outputs(images)

  def serve_uint8(images):
    if check_inputs:
      images = checked_shape(images, shape)
    return outputs(tf.cast(images, tf.float32) / 255.0)

  archive = keras.export.ExportArchive()
  archive.track(classifier)
  archive.add_endpoint(
      "serving_default", serve_floats,
      input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
  archive.add_endpoint(
      "serving_uint8", serve_uint8,
      input_signature=[tf.TensorSpec(shape, tf.uint8, name="images")])
  with io_utils.atomic_directory(export_dir) as tmp:
    archive.write_out(tmp, verbose=False)
  return export_dir


def served_logits(path: str, scale=None):
  """A SavedModel's `serving_default` signature as a function for the
  attacks: part_tf's exports (input `images`, output `logits`) and others
  (e.g. Keras' `model.export()`) with one image input and one output, or an
  output named `logits`.

  An attack's point at the edge of the [0, 1] box can round one float step
  outside it (FAB's x + eps * u with u at the box), which part_tf's
  `serving_default` refuses; the images are clipped to [0, 1] first, which
  changes nothing, gradients included, for pixels in [0, 1].

  Args:
    path: a SavedModel folder.
    scale: images in [0, 1] -> what the model takes (after the clipping),
      or None for part_tf's [0, 1].

  Returns:
    (images in [0, 1] -> float32 logits, the image shape (H, W, C)).

  Raises:
    ValueError: no `serving_default` signature, or one that does not take
      one batch of float images or does not give one output (or `logits`).
  """
  loaded = tf.saved_model.load(path)
  if "serving_default" not in loaded.signatures:
    raise ValueError(f"it has no serving_default signature (it has "
                     f"{sorted(loaded.signatures) or 'none'})")
  serving = loaded.signatures["serving_default"]
  inputs = serving.structured_input_signature[1]
  if len(inputs) != 1 or len(next(iter(inputs.values())).shape) != 4:
    raise ValueError("serving_default must take one batch of images "
                     f"[N, H, W, C]; it takes {_describe(inputs)}")
  (name, spec), = inputs.items()
  if not spec.dtype.is_floating:
    raise ValueError(f"serving_default takes {spec.dtype.name} images: the "
                     "attacks need gradients, so export a float signature")
  outputs = serving.structured_outputs
  if "logits" in outputs:
    output = "logits"
  elif len(outputs) == 1:
    output, = outputs
  else:
    raise ValueError("serving_default gives several outputs and none is "
                     f"named logits: {_describe(outputs)}")

  def logits(images, keep=loaded):  # the loaded object outlives its use
    del keep
    images = tf.clip_by_value(images, 0.0, 1.0)
    if scale is not None:
      images = scale(images)
    images = tf.cast(images, spec.dtype)
    return tf.cast(serving(**{name: images})[output], tf.float32)

  return logits, tuple(spec.shape[1:])


def _describe(specs: dict) -> str:
  return ", ".join(f"{k} {v.dtype.name}{list(v.shape)}"
                   for k, v in sorted(specs.items())) or "nothing"
