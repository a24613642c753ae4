"""Export the robust classifier (not the training wrapper) for serving.

The SavedModel has two signatures, each returning `logits`, `probabilities`,
`classes` (the predicted label) and `class_name` (its name, a string such as
"n01443537 goldfish" for TinyImageNet or "cat" for CIFAR-10):

* `serving_default`: `images`, float32 [None, H, W, C] with values in [0, 1];
* `serving_uint8`: `images`, uint8 [None, H, W, C] with values in 0..255.

A request with no images gets outputs with no rows.

Load it with `tf.saved_model.load(path).signatures["serving_default"]`, or
inspect it with `saved_model_cli show --dir PATH --all`.
"""

import keras
import tensorflow as tf

from part_tf import io_utils
from part_tf_flags import check_local_path


def export_classifier(classifier: keras.Model, export_dir: str,
                      class_names=None) -> str:
  """Writes `classifier` as a SavedModel to `export_dir`, atomically.

  Args:
    classifier: functional model, images in [0, 1] -> logits.
    export_dir: target folder; an existing export there is replaced only once
      the new one is completely written.
    class_names: the name of each class (`part_tf.data.class_names`);
      None: the label numbers as text.

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

  archive = keras.export.ExportArchive()
  archive.track(classifier)
  archive.add_endpoint(
      "serving_default", outputs,
      input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
  archive.add_endpoint(
      "serving_uint8",
      lambda images: outputs(tf.cast(images, tf.float32) / 255.0),
      input_signature=[tf.TensorSpec(shape, tf.uint8, name="images")])
  with io_utils.atomic_directory(export_dir) as tmp:
    archive.write_out(tmp, verbose=False)
  return export_dir
