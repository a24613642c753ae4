"""SavedModel export: round trip, both signatures, atomic replacement."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from part_tf import data
from part_tf import export
from part_tf.data import class_names
from tests import test_tiny_imagenet
from part_tf.models import resnet18
from part_tf.models import small_cnn


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

  def test_outputs_carry_the_class_names(self):
    keras.utils.set_random_seed(3)
    model = small_cnn((8, 8, 3), 3)
    names = ["n02124075 Egyptian cat", "n04067472 reel", "n01443537 goldfish"]
    path = export.export_classifier(
        model, os.path.join(tempfile.mkdtemp(), "e"), names)
    loaded = tf.saved_model.load(path)
    pixels = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3),
                                               dtype=np.uint8)
    for name, images in (("serving_uint8", pixels),
                         ("serving_default", pixels.astype(np.float32) / 255)):
      out = loaded.signatures[name](images=tf.constant(images))
      # The earlier outputs are unchanged; class_name names each class.
      self.assertCountEqual(out.keys(), ["logits", "probabilities",
                                         "classes", "class_name"])
      self.assertEqual(out["class_name"].dtype, tf.string)
      self.assertEqual([n.decode() for n in out["class_name"].numpy()],
                       [names[c] for c in out["classes"].numpy()])
    self.assertGreater(len(set(out["classes"].numpy())), 1)
    empty = loaded.signatures["serving_uint8"](
        images=tf.zeros([0, 8, 8, 3], tf.uint8))
    self.assertEqual(empty["class_name"].shape, (0,))
    # Without names, the label numbers; a wrong count is refused.
    plain = tf.saved_model.load(export.export_classifier(
        model, os.path.join(tempfile.mkdtemp(), "e")))
    out = plain.signatures["serving_uint8"](images=tf.constant(pixels))
    self.assertAllEqual(out["class_name"].numpy().astype(str),
                        out["classes"].numpy().astype(str))
    with self.assertRaisesRegex(ValueError, "2 class names for a "
                                "classifier of 3 classes"):
      export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"),
                               names[:2])

  def test_dataset_class_names(self):
    self.assertEqual(class_names.class_names(data.DATASETS["cifar10"])[3],
                     "cat")
    self.assertEqual(class_names.class_names(data.DATASETS["mnist_offline"]),
                     tuple("0123456789"))
    self.assertEqual(
        class_names.class_names(data.DATASETS["fashion_mnist"])[0],
        "T-shirt")

  def test_tiny_imagenet_export_through_train_py_names_wnids_and_words(self):
    root = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, root)
    test_tiny_imagenet.make_release(root / "manual")
    run = root / "run"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--dataset=tiny_imagenet", f"--manual_dir={root / 'manual'}",
         f"--data_dir={root / 'data'}", f"--model_dir={run}",
         "--model=small_cnn", "--epochs=2", "--burn_in_epochs=1",
         "--eval_every=1", "--validation_split=3", "--allow_small_validation",
         "--batch_size=3",
         "--num_steps=1", "--eval_num_steps=1", "--image_count=0"],
        capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    # The paper's setup for tiny_imagenet, but the model given.
    first = result.stdout.splitlines()[0]
    self.assertStartsWith(first, "tiny_imagenet defaults")
    self.assertIn("--optimizer=sgd", first)
    self.assertNotIn("--model=", first)
    self.assertIn("validation: 3 training images held out", result.stdout)
    with open(run / "metrics.json") as f:
      metrics = json.load(f)
    self.assertEqual(metrics["validation"]["size"], 3)
    wnids = test_tiny_imagenet.WNIDS
    expected = [f"{w} {test_tiny_imagenet.WORDS[w].split(',')[0]}"
                for w in wnids]
    for folder in (metrics["export"], metrics["best"]["export"]):
      serving = tf.saved_model.load(str(run / folder)).signatures[
          "serving_uint8"]
      # Each class's own name: logits made to pick each class in turn.
      out = serving(images=tf.zeros([2, 64, 64, 3], tf.uint8))
      for c, name in zip(out["classes"].numpy(), out["class_name"].numpy()):
        want = expected[c] if c < len(wnids) else str(c)
        self.assertEqual(name.decode(), want)
    names = class_names.class_names(
        data.resolve_spec("tiny_imagenet"), str(root / "data"))
    self.assertEqual(list(names[:3]), expected)
    self.assertEqual(names[3:5], ("3", "4"))  # the miniature has 3 classes

  def test_saved_model_cli_shows_the_signature(self):
    path = export.export_classifier(small_cnn((8, 8, 1), 3),
                                    os.path.join(tempfile.mkdtemp(), "e"))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", path, "--tag_set", "serve", "--signature_def",
         "serving_default"], capture_output=True, text=True, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr)
    for name in ("inputs['images']", "outputs['logits']",
                 "outputs['class_name']",
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
