"""Streaming input, any TFDS dataset by name, and the tf.data service."""

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow.python.framework import config as tf_config

from part_tf import experiment
from part_tf.config import TrainConfig
from part_tf.data import datasets
from part_tf.data import streaming
from part_tf.data import tfds_any
from tests import commands
from tests import test_tiny_imagenet
from tests import tiny_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(images):
  """The multiset of images, as sorted bytes."""
  images = np.asarray(images)
  return sorted(row.tobytes() for row in images.reshape(len(images), -1))


def _one_pass(spec, batch_size, num_examples, **kwargs):
  ds = streaming.train_stream(spec, batch_size, seed=3, augment=False,
                              **kwargs)
  batches = list(ds.take(num_examples // batch_size).as_numpy_iterator())
  return np.round(np.concatenate([x for x, _ in batches]) * 255).astype(
      np.uint8), np.concatenate([y for _, y in batches])


@pytest.mark.slow
class StreamTest(tf.test.TestCase):

  def test_mock_tfds_stream_yields_the_memory_multiset_each_pass(self):
    with tfds.testing.mock_data(num_examples=24):
      spec = tfds_any.spec_for("tfds:imagenette", image_size=16)
      self.assertEqual(spec.image_shape, (16, 16, 3))
      self.assertEqual(spec.num_classes, 10)
      train, _, _ = datasets.load("tfds:imagenette", spec=spec)
      self.assertEqual(train.images.shape, (24, 16, 16, 3))
      ds = streaming.train_stream(spec, 8, seed=3, augment=False)
      batches = list(ds.take(6).as_numpy_iterator())  # two passes
    images = np.round(np.concatenate([x for x, _ in batches]) * 255)
    images = images.astype(np.uint8)
    labels = np.concatenate([y for _, y in batches])
    for half in (slice(0, 24), slice(24, 48)):
      self.assertEqual(_rows(images[half]), _rows(train.images))
      self.assertEqual(sorted(labels[half]), sorted(train.labels))

  def test_two_augmented_views_for_consistency_regularisation(self):
    with tfds.testing.mock_data(num_examples=24):
      spec = tfds_any.spec_for("tfds:imagenette", image_size=16)
      one = next(iter(streaming.train_stream(spec, 8, seed=3)))
      two = next(iter(streaming.train_stream(spec, 8, seed=3, views=2)))
      paper = [next(iter(streaming.train_stream(
          spec, 8, seed=3, views=2, view_augmentation="randaugment")))
               for _ in range(2)]
    self.assertEqual(two[0].shape, (8, 2, 16, 16, 3))
    self.assertAllEqual(two[0][:, 0], one[0])  # the first view: the usual
    self.assertAllEqual(two[1], one[1])
    self.assertNotAllClose(two[0][:, 0], two[0][:, 1])
    # RandAugment + Cutout views: the same batch each time, other views.
    self.assertAllEqual(paper[0][0], paper[1][0])
    self.assertAllEqual(paper[0][1], two[1])
    self.assertNotAllClose(paper[0][0], two[0])

  def test_tiny_imagenet_archive_stream_equals_memory(self):
    data_dir, (train, test, spec) = test_tiny_imagenet.prepared_miniature(
        self)
    n = len(train.labels)
    images, labels = _one_pass(spec, 4, n, data_dir=data_dir)
    self.assertEqual(_rows(images), _rows(train.images))
    self.assertEqual(sorted(labels), sorted(train.labels))
    # A reproducible order per (seed, start epoch), a new one per start.
    again, _ = _one_pass(spec, 4, n, data_dir=data_dir)
    self.assertAllEqual(again, images)
    resumed, _ = _one_pass(spec, 4, n, data_dir=data_dir, start_epoch=5)
    self.assertEqual(_rows(resumed), _rows(images))
    # The test split, in order.
    streamed = np.concatenate([x for x, _ in streaming.eval_stream(
        spec, 5, data_dir=data_dir).as_numpy_iterator()])
    self.assertAllEqual(np.round(streamed * 255).astype(np.uint8),
                        test.images)
    self.assertEqual(streaming.choose("auto", spec, data_dir,
                                      budget_gb=1e-9), "stream")
    self.assertEqual(streaming.choose("auto", spec, data_dir), "memory")

  def test_a_resumed_run_keeps_its_input_mode(self):
    root = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, root)
    self.addCleanup(tf_config.disable_op_determinism)
    test_tiny_imagenet.make_release(root / "manual")
    config = TrainConfig.from_flat(dict(
        model_dir=str(root / "run"), dataset="tiny_imagenet",
        data_dir=str(root / "data"), manual_dir=str(root / "manual"),
        input="auto", input_memory_budget=1e-9,  # streams
        batch_size=4, epochs=1, burn_in_epochs=0,
        method="at", num_steps=1, eval_num_steps=1, eval_subset=4,
        image_count=0, export=False))
    experiment.train(config)
    with self.assertRaisesRegex(ValueError, "trained with stream input.*"
                                "--input=stream"):
      # The budget may change on a resume, but not what it decided.
      experiment.train(config.replace(epochs=2, input_memory_budget=4.0))
    resumed = experiment.train(config.replace(epochs=2))
    self.assertEqual(resumed["resumed_at_epoch"], 1)

  def test_two_input_pipelines_share_out_a_one_file_split(self):
    root = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, root)
    test_tiny_imagenet.make_release(root / "manual")
    data_dir = str(root / "data")
    train, _, spec = datasets.load("tiny_imagenet", data_dir=data_dir,
                                   manual_dir=str(root / "manual"))
    n = len(train.labels)  # 12, in one file
    parts = [_one_pass(spec, 2, n // 2, data_dir=data_dir,
                       input_context=tf.distribute.InputContext(
                           num_input_pipelines=2, input_pipeline_id=i))[0]
             for i in range(2)]
    self.assertEqual(_rows(np.concatenate(parts)), _rows(train.images))

  def test_stream_memory_does_not_grow_with_the_dataset(self):
    """Peak RSS growth (Linux' VmHWM, reset once the pipeline runs) of one
    pass over 1,000 and over 6,000 64x64 images (12 MB and 74 MB
    decoded), streamed and loaded into memory."""
    data_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, data_dir)
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(64, 64, 3)),
        "label": tfds.features.ClassLabel(num_classes=10)})
    rng = np.random.default_rng(0)
    for name, n in (("small_images", 1000), ("large_images", 6000)):
      arrays = {"image": rng.integers(0, 256, (n, 64, 64, 3), np.uint8),
                "label": rng.integers(0, 10, n)}
      tfds.dataset_builders.store_as_tfds_dataset(
          name=name, version="1.0.0", features=features, config=None,
          split_datasets={
              "train": tf.data.Dataset.from_tensor_slices(arrays),
              "test": tf.data.Dataset.from_tensor_slices(
                  {k: v[:10] for k, v in arrays.items()})},
          data_dir=data_dir)
    peaks = {}
    for name in ("small_images", "large_images"):
      for mode in ("stream", "memory"):
        code = textwrap.dedent(f"""
            import tensorflow as tf
            from part_tf.data import datasets, streaming
            spec = datasets.resolve_spec("tfds:{name}", {data_dir!r},
                                         mean=[0.5] * 3, std=[0.25] * 3)
            n = streaming.num_examples(spec, "train", {data_dir!r})
            def status(key):
              with open("/proc/self/status") as f:
                line = next(l for l in f if l.startswith(key))
              return int(line.split()[1])  # kB
            def reset():
              with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak (VmHWM) to the current RSS
              return status("VmRSS:")
            if "{mode}" == "stream":
              ds = streaming.train_stream(spec, 100, seed=0,
                                          data_dir={data_dir!r},
                                          shuffle_buffer=500)
              # Fixed buffers: tf.data's autotuning grows them over time
              # (up to its own RAM budget), whatever the dataset's size.
              options = tf.data.Options()
              options.autotune.enabled = False
              batches = iter(ds.with_options(options))
              next(batches)
              start = reset()
              for _ in range(n // 100 - 1):
                next(batches)
            else:
              start = reset()
              datasets.load("tfds:{name}", {data_dir!r}, spec=spec)
            print(status("VmHWM:") - start)
            """)
        result = commands.run([sys.executable, "-c", code], cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        peaks[name, mode] = int(result.stdout.split()[-1]) / 1024  # MB
    stream_growth = peaks["large_images", "stream"] - peaks[
        "small_images", "stream"]
    memory_growth = peaks["large_images", "memory"] - peaks[
        "small_images", "memory"]
    print(f"peak RSS growth for 62 MB more images: stream "
          f"{stream_growth:.0f} MB, memory {memory_growth:.0f} MB")
    self.assertGreater(memory_growth, 55, peaks)  # the measure sees growth
    # Less than half the added data (malloc's arenas and tf.data's buffers
    # move by some MB from run to run; the data itself is 62 MB).
    self.assertLess(stream_growth, 31, peaks)

  def test_unprepared_tfds_dataset_offline_is_a_one_line_error(self):
    try:
      socket.create_connection(("storage.googleapis.com", 443), 3).close()
      self.skipTest("TFDS' download host is reachable: it would download")
    except OSError:
      pass
    data_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, data_dir)
    with self.assertRaisesRegex(FileNotFoundError,
                                "tfds build mnist --data_dir=DIR") as raised:
      datasets.resolve_spec("tfds:mnist", data_dir)
    self.assertNotIn("\n", str(raised.exception))

  def test_bad_names_and_modes(self):
    with self.assertRaisesRegex(ValueError, "no TFDS dataset named"):
      tfds_any.spec_for("tfds:no_such_dataset_xyz")
    with self.assertRaisesRegex(ValueError, "reads TFDS shards"):
      streaming.choose("stream", datasets.DATASETS["mnist_offline"])
    with tfds.testing.mock_data(num_examples=4):
      with self.assertRaisesRegex(ValueError, "pass --image_size"):
        tfds_any.spec_for("tfds:imagenette")
      with self.assertRaisesRegex(ValueError, "--mean has 1 values"):
        tfds_any.spec_for("tfds:cifar10", mean=[0.5], std=[0.2] * 3)


@pytest.mark.slow
class TfdsByNameTrainTest(tf.test.TestCase):

  def test_train_py_on_a_resized_mock_dataset(self):
    model_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, model_dir)
    result = tiny_runs.train_on_mock_tfds(
        ["--dataset=tfds:imagenette", "--image_size=16", "--input=stream",
         "--epochs=1", "--burn_in_epochs=0", "--method=at", "--num_steps=1",
         "--eval_num_steps=1", "--batch_size=16", "--eval_subset=16",
         "--image_count=2", f"--model_dir={model_dir}"], num_examples=48)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual(config["input_used"], "stream")
    self.assertEqual(config["dataset_spec"]["image_shape"], [16, 16, 3])
    self.assertEqual(config["dataset_spec"]["num_classes"], 10)
    with open(os.path.join(model_dir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertEqual(metrics["num_test_examples"], 48)
    self.assertIn("training small_cnn on tfds:imagenette", result.stdout)


class DataServiceTest(tf.test.TestCase):

  @classmethod
  def tearDownClass(cls):
    tf_config.disable_op_determinism()  # experiment.train turned it on
    super().tearDownClass()

  def test_a_dispatcher_that_does_not_answer_is_named_in_one_line(self):
    with socket.socket() as s:  # a port nothing listens on
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    model_dir = os.path.join(root, "run")
    try:  # killed after its timeout if it hangs (as it did)
      result = commands.run(
          [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
           *tiny_runs.TINY_TRAIN, "--epochs=1", "--burn_in_epochs=0",
           f"--data_service=grpc://127.0.0.1:{port}", "--cluster_timeout=2",
           f"--model_dir={model_dir}"],
          capture_output=True, text=True, timeout=120, check=False)
      outcome = (result.returncode, result.stderr.strip().splitlines())
    except subprocess.TimeoutExpired:
      outcome = "still running after 120 s"
    self.assertEqual(outcome, (1, [
        f"error: --data_service=grpc://127.0.0.1:{port}: no tf.data service "
        "dispatcher answers there within 2 s (--cluster_timeout); start it "
        "first"]))
    self.assertFalse(os.path.exists(model_dir))

  @pytest.mark.slow  # two trainings, one through a tf.data service
  def test_training_through_the_service_equals_the_local_pipeline(self):
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=address, worker_address="127.0.0.1:%port%",
            port=0))
    self.addCleanup(dispatcher._stop)  # pylint: disable=protected-access
    self.addCleanup(worker._stop)  # pylint: disable=protected-access
    self.assertTrue(address.startswith("localhost:"), address)
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    base = TrainConfig.from_flat(dict(
        model_dir=os.path.join(root, "local"), max_train_examples=256,
        max_test_examples=64, batch_size=128, epsilon=0.1, epsilon_low=0.07,
        step_size=0.025, num_steps=1, eval_num_steps=1, eval_subset=32,
        optimizer="adam", learning_rate=1e-3, epochs=2, burn_in_epochs=1,
        image_count=0, export=False))
    local = experiment.train(base)
    self.assertEqual(worker._num_tasks(), 0)  # pylint: disable=protected-access
    served = experiment.train(base.replace(
        model_dir=os.path.join(root, "served"),
        data_service=dispatcher.target))
    # The service's worker made the batches.
    self.assertGreater(worker._num_tasks(), 0)  # pylint: disable=protected-access
    for key in ("natural_accuracy", "pgd1_accuracy"):
      self.assertEqual(served[key], local[key])
    with open(os.path.join(root, "local", "log.csv")) as f:
      local_log = f.read()
    with open(os.path.join(root, "served", "log.csv")) as f:
      self.assertEqual(f.read(), local_log)


if __name__ == "__main__":
  tf.test.main()
