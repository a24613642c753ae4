"""SavedModel export: round trip, both signatures, atomic replacement."""

import os
import subprocess
import sys
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from part_tf import export
from part_tf.models import resnet18
from part_tf.models import small_cnn


class ExportTest(tf.test.TestCase):

  def test_round_trip_equals_keras_model(self):
    keras.utils.set_random_seed(2)
    model = resnet18((32, 32, 3), 10, mean=[0.5] * 3, std=[0.25] * 3)
    path = export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"))
    loaded = tf.saved_model.load(path)
    self.assertCountEqual(loaded.signatures.keys(),
                          ["serving_default", "serving_uint8"])
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3),
                                               dtype=np.uint8)
    x = pixels.astype(np.float32) / 255.0
    logits = model(x, training=False).numpy()
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    self.assertAllClose(out["logits"], logits, atol=1e-4, rtol=1e-5)
    self.assertAllClose(out["probabilities"], tf.nn.softmax(logits), atol=1e-5)
    self.assertAllEqual(out["classes"], np.argmax(logits, -1))
    out8 = loaded.signatures["serving_uint8"](images=tf.constant(pixels))
    self.assertAllClose(out8["logits"], logits, atol=1e-4, rtol=1e-5)
    spec = loaded.signatures["serving_default"].structured_input_signature[1]
    self.assertEqual(spec["images"].shape.as_list(), [None, 32, 32, 3])

  def test_an_empty_request_gets_empty_outputs(self):
    keras.utils.set_random_seed(2)
    model = small_cnn((8, 8, 1), 3)
    path = export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"))
    loaded = tf.saved_model.load(path)
    for name, dtype in (("serving_default", tf.float32),
                        ("serving_uint8", tf.uint8)):
      out = loaded.signatures[name](images=tf.zeros([0, 8, 8, 1], dtype))
      self.assertEqual(out["logits"].shape, (0, 3))
      self.assertEqual(out["probabilities"].shape, (0, 3))
      self.assertEqual(out["classes"].shape, (0,))
      self.assertEqual(out["classes"].dtype, tf.int32)
      one = loaded.signatures[name](images=tf.ones([1, 8, 8, 1], dtype))
      self.assertAllClose(one["logits"],
                          model(tf.cast(tf.ones([1, 8, 8, 1]), tf.float32) /
                                (255.0 if dtype == tf.uint8 else 1.0)),
                          atol=1e-5)

  def test_saved_model_cli_shows_the_signature(self):
    path = export.export_classifier(small_cnn((8, 8, 1), 3),
                                    os.path.join(tempfile.mkdtemp(), "e"))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", path, "--tag_set", "serve", "--signature_def",
         "serving_default"], capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr)
    for name in ("inputs['images']", "outputs['logits']",
                 "outputs['probabilities']", "outputs['classes']",
                 "(-1, 8, 8, 1)"):
      self.assertIn(name, result.stdout)

  def test_failed_export_keeps_the_previous_one(self):
    model = small_cnn((8, 8, 1), 3)
    path = os.path.join(tempfile.mkdtemp(), "export")
    export.export_classifier(model, path)
    before = sorted(os.listdir(path))
    with mock.patch.object(tf.saved_model, "save",
                           side_effect=OSError("disk full")):
      with self.assertRaisesRegex(OSError, "disk full"):
        export.export_classifier(model, path)
    self.assertEqual(sorted(os.listdir(path)), before)
    self.assertEqual(os.listdir(os.path.dirname(path)), ["export"])
    tf.saved_model.load(path)


if __name__ == "__main__":
  tf.test.main()
