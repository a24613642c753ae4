"""SavedModel export: round trip, both signatures, input checks, atomic
replacement."""

import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from part_tf import attacks
from part_tf import data
from part_tf import export
from part_tf.data import class_names
from tests import commands
from tests import test_tiny_imagenet
from part_tf.models import resnet18
from part_tf.models import small_cnn


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The exact text a client gets back (a 0..255 float client is the usual case).
PIXEL_ERROR = re.escape("pixels must be floats in [0, 1]; use serving_uint8 "
                        "for 0-255 images")
# The tiny model's two 2x2 poolings floor 9 (and 8x9) to 8's 2x2 features: it
# answers for such an image unless the export refuses it.
WRONG_SHAPES = ((1, 9, 9, 1), (2, 8, 9, 1))


def bad_float_batches():
  """(name, float32 [3, 8, 8, 1] batch) pairs that serving_default refuses."""
  good = np.random.default_rng(4).uniform(size=(3, 8, 8, 1)).astype(np.float32)
  batches = [("0..255 floats", np.round(good * 255))]
  for value in (np.nan, np.inf, -np.inf, 1e6, -5.0, 1.0001, -1e-6):
    one = good.copy()
    one[2, 3, 4, 0] = value  # one bad pixel in the last image
    batches.append((f"one pixel {value}", one))
    batches.append((f"all {value}", np.full_like(good, value)))
  return batches


def logits_and_gradient(fn, images):
  """fn(images) and the gradient of a weighted sum of it w.r.t. images."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    logits = fn(images)
    total = tf.reduce_sum(logits * tf.range(1.0, logits.shape[-1] + 1.0))
  return logits, tape.gradient(total, images)


def graph_only_runner(path, signature):
  """Runs `signature` as TF Serving does: the SavedModel's graph, fed by C++.

  A TF1 session runs the MetaGraph with no Python check of the fed shape
  (`Session.run` would refuse a wrong shape itself, before the graph).

  Returns:
    images -> logits, and the session to close.
  """
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph)
  with graph.as_default():
    meta = tf.compat.v1.saved_model.load(session, ["serve"], path)
  info = meta.signature_def[signature]
  options = config_pb2.CallableOptions(
      feed=[info.inputs["images"].name], fetch=[info.outputs["logits"].name])
  run = session._make_callable_from_options(options)  # pylint: disable=protected-access
  return (lambda images: run(images)[0]), session


@pytest.mark.slow
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

  def test_float_signature_refuses_pixels_outside_0_1(self):
    keras.utils.set_random_seed(5)
    model = small_cnn((8, 8, 1), 3)
    path = export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"))
    loaded = tf.saved_model.load(path)
    calls = {"signature": lambda x: loaded.signatures["serving_default"](
                 images=x)["logits"],
             "endpoint function": lambda x: loaded.serving_default(x)["logits"]}
    for call_name, call in calls.items():
      for name, images in bad_float_batches():
        with self.subTest(call=call_name, images=name):
          with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                      PIXEL_ERROR):
            call(tf.constant(images))
      # The ends of [0, 1] are pixels like any other.
      edges = np.zeros((2, 8, 8, 1), np.float32)
      edges[1] = 1.0
      self.assertAllClose(call(tf.constant(edges)), model(edges), atol=1e-5)
      self.assertEqual(call(tf.zeros([0, 8, 8, 1])).shape, (0, 3))
    # uint8 has no range to check: all of 0..255 is served.
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    out = loaded.signatures["serving_uint8"](images=tf.constant(pixels))
    self.assertAllClose(out["logits"], model(pixels / 255.0), atol=1e-5)

  def test_both_signatures_refuse_another_image_shape(self):
    keras.utils.set_random_seed(6)
    model = small_cnn((8, 8, 1), 3)
    path = export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"))
    loaded = tf.saved_model.load(path)
    for name, dtype in (("serving_default", tf.float32),
                        ("serving_uint8", tf.uint8)):
      spec, = loaded.signatures[name].structured_input_signature[1].values()
      self.assertEqual(spec.shape.as_list(), [None, 8, 8, 1])
      endpoint = getattr(loaded, name)
      for shape in WRONG_SHAPES:
        images = tf.zeros(shape, dtype)
        with self.subTest(signature=name, shape=shape):
          # The loaded signature does not check what it is fed against what
          # it declares: the graph must.
          with self.assertRaisesRegex(
              tf.errors.InvalidArgumentError,
              re.escape(f"{list(shape)}".replace(" ", "")) +
              r" is not compatible with expected shape \[\?,8,8,1\]"):
            loaded.signatures[name](images=images)
          # The restored tf.function refuses it when binding its input.
          with self.assertRaises((TypeError, tf.errors.InvalidArgumentError)):
            endpoint(images)
      self.assertEqual(loaded.signatures[name](
          images=tf.zeros([2, 8, 8, 1], dtype))["logits"].shape, (2, 3))

  def test_the_checks_hold_where_only_the_graph_runs(self):
    # As in TF Serving: the SavedModel's graph run by a session, no Python
    # between the request and the graph.
    keras.utils.set_random_seed(7)
    model = small_cnn((8, 8, 1), 3)
    path = export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"))
    for name, dtype in (("serving_default", np.float32),
                        ("serving_uint8", np.uint8)):
      run, session = graph_only_runner(path, name)
      self.addCleanup(session.close)
      for shape in WRONG_SHAPES:
        with self.subTest(signature=name, shape=shape):
          with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                      "is not compatible with expected shape"):
            run(np.zeros(shape, dtype))
      self.assertEqual(run(np.zeros((0, 8, 8, 1), dtype)).shape, (0, 3))
      pixels = np.random.default_rng(8).integers(0, 256, (3, 8, 8, 1))
      images = (pixels.astype(np.uint8) if dtype == np.uint8
                else (pixels / 255).astype(np.float32))
      self.assertAllClose(run(images), model(pixels / 255.0), atol=1e-5)
    run, session = graph_only_runner(path, "serving_default")
    self.addCleanup(session.close)
    for name, images in bad_float_batches():
      with self.subTest(images=name):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    PIXEL_ERROR):
          run(images)

  def test_attacks_run_through_the_export_at_the_box_edge(self):
    # FAB's points at the edge of [0, 1] round one float step outside it:
    # the signature refuses them, served_logits (evaluate.py's SavedModel
    # path) clips them, and is the Keras model inside the box, gradients
    # included.
    keras.utils.set_random_seed(9)
    model = small_cnn((8, 8, 3), 10)
    path = export.export_classifier(model, os.path.join(tempfile.mkdtemp(), "e"))
    logits_fn, shape = export.served_logits(path)
    self.assertEqual(shape, (8, 8, 3))
    x = tf.constant(np.random.default_rng(10).integers(
        0, 256, (32, 8, 8, 3)).astype(np.float32) / 255)
    y = tf.argmax(model(x), axis=-1, output_type=tf.int32)
    loaded = tf.saved_model.load(path)  # outlives its signature
    signature = loaded.signatures["serving_default"]
    fab = lambda fn: attacks.fab(fn, x, y, 8 / 255, num_steps=10,
                                 num_targets=3)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, PIXEL_ERROR):
      fab(lambda z: signature(images=z)["logits"])
    x_adv = fab(logits_fn).numpy()
    moved = np.any(x_adv != x.numpy(), axis=(1, 2, 3))
    self.assertGreater(moved.sum(), 0)  # FAB found examples through it
    self.assertLessEqual(np.max(np.abs(x_adv - x)), 8 / 255 + 1e-6)
    self.assertAllEqual(
        np.argmax(model(x_adv[moved]), -1) != y.numpy()[moved], [True] *
        moved.sum())
    # Inside the box (its edges included) nothing moves, gradients included.
    edges = tf.concat([x[:2], tf.zeros_like(x[:1]), tf.ones_like(x[:1])], 0)
    served, served_grad = logits_and_gradient(logits_fn, edges)
    keras_logits, keras_grad = logits_and_gradient(
        lambda z: model(z, training=False), edges)
    self.assertAllClose(served, keras_logits, atol=1e-5)
    self.assertAllClose(served_grad, keras_grad, atol=1e-5)
    self.assertGreater(np.mean(np.abs(keras_grad) > 0), 0.5)
    outside = np.array(x[:1])
    outside[0, 0, 0] = [np.nextafter(np.float32(1), np.float32(2)), -1e-9, 0.5]
    self.assertAllClose(logits_fn(tf.constant(outside)),
                        model(np.clip(outside, 0, 1)), atol=1e-5)

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
    result = commands.run(
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

  def test_saved_model_cli_shows_the_signatures(self):
    path = export.export_classifier(small_cnn((8, 8, 1), 3),
                                    os.path.join(tempfile.mkdtemp(), "e"))
    # The tool's module (what the `saved_model_cli` console script runs)
    # through the warm process; test_doc_examples runs the script itself.
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    for signature, dtype in (("serving_default", "DT_FLOAT"),
                             ("serving_uint8", "DT_UINT8")):
      result = commands.run(
          [*cli, "show", "--dir", path, "--tag_set", "serve",
           "--signature_def", signature], capture_output=True, text=True,
          timeout=120)
      self.assertEqual(result.returncode, 0, result.stderr)
      for name in ("inputs['images']", "outputs['logits']",
                   "outputs['class_name']",
                   "outputs['probabilities']", "outputs['classes']"):
        self.assertIn(name, result.stdout)
      # The declared image shape is exact: only the batch size is free.
      inputs = result.stdout.split("The given SavedModel SignatureDef")[1]
      self.assertIn(f"dtype: {dtype}", inputs)
      self.assertIn("shape: (-1, 8, 8, 1)", inputs)

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
