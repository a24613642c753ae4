"""The validation split: the best epoch is chosen on held-out training
images, never on the test split; streamed and in-memory input hold out the
same images; a resumed run holds out the same ones again."""

import csv
import json
import os
import shutil
import sys
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from part_tf import data
from part_tf import evaluation
from part_tf import experiment
from part_tf.config import TrainConfig
from part_tf import run_folder
from part_tf.data import streaming
from part_tf.data import validation
from part_tf.parsing import parse_validation_split
from tests import commands
from tests import test_tiny_imagenet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")


def _rows(images):
  images = np.asarray(images)
  return sorted(row.tobytes() for row in images.reshape(len(images), -1))


class SizeAndBlockTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ("auto", 50_000, True, 1000),   # 2% would be 1,000: the cap
      ("auto", 100_000, True, 1000),  # 2% is 2,000: capped at 1,000
      ("auto", 4_000, True, 100),     # 2% is 80: raised to the minimum
      ("auto", 4_000, False, 0),      # nothing to choose: nothing held out
      ("auto", 40, True, 0),          # 2% of 40 rounds down to none
      (250, 4_000, False, 250),       # explicit counts hold out regardless
      (0.1, 4_000, True, 400),
      ("0.1", 4_000, True, 400),
      ("0", 4_000, True, 0))
  def test_size(self, setting, num_train, selects, expected):
    self.assertEqual(validation.size_for(setting, num_train, selects),
                     expected)

  def test_a_split_that_leaves_nothing_to_train_on_is_refused(self):
    with self.assertRaisesRegex(ValueError, "leaving none to train on"):
      validation.size_for(100, 100)

  @parameterized.parameters("auto", "0", "1000", "0.02", " AUTO ")
  def test_flag_values(self, text):
    parse_validation_split(text)

  @parameterized.parameters("-1", "1.0", "1.5", "2%", "some", "")
  def test_bad_flag_values(self, text):
    with self.assertRaises(ValueError):
      parse_validation_split(text)

  def test_block_is_seeded_and_fixed(self):
    blocks = [validation.Block.choose(10_000, 200, seed) for seed in range(20)]
    self.assertEqual(blocks[3], validation.Block.choose(10_000, 200, 3))
    self.assertGreater(len({b.offset for b in blocks}), 15)
    for b in blocks:
      self.assertBetween(b.offset, 0, 10_000 - 200)
      self.assertEqual(b.end - b.offset, 200)

  def test_arrays_and_tfds_slices_partition_the_split(self):
    n = 50
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    block = validation.Block.choose(n, 7, seed=1)
    train, held = block.split_arrays(data.ArrayData(images, np.arange(n)))
    self.assertLen(held.labels, 7)
    self.assertLen(train.labels, n - 7)
    self.assertEqual(sorted([*train.labels, *held.labels]), list(range(n)))
    self.assertAllEqual(held.labels, np.arange(block.offset, block.end))
    train_split, val_split = block.tfds_splits("train")
    self.assertEqual(val_split, f"train[{block.offset}:{block.end}]")
    self.assertIn(f"train[{block.end}:{n}]", train_split)
    # A block at either end leaves one slice.
    self.assertEqual(validation.Block(n, 0, 5).tfds_splits("train"),
                     ("train[5:50]", "train[0:5]"))
    self.assertEqual(validation.Block(n, 45, 5).tfds_splits("train"),
                     ("train[:45]", "train[45:50]"))

  def test_describe_warns_about_a_one_class_block(self):
    block = validation.Block(100, 10, 20)
    self.assertNotIn("WARNING", validation.describe(
        block, np.arange(20) % 10, 10))
    self.assertIn("WARNING: one class only", validation.describe(
        block, np.zeros(20, np.int32), 10))


class StreamedAndInMemoryTest(tf.test.TestCase):

  def test_both_inputs_hold_out_the_same_images(self):
    data_dir, (train, _, spec) = test_tiny_imagenet.prepared_miniature(self)
    n = len(train.labels)
    block = validation.Block.choose(n, 3, seed=2)
    self.assertBetween(block.offset, 1, n - 4)  # a block inside the split
    kept, held = block.split_arrays(train)
    train_split, val_split = block.tfds_splits(spec.train_split)
    streamed_val = np.concatenate([x for x, _ in streaming.eval_stream(
        spec, 2, split=val_split, data_dir=data_dir).as_numpy_iterator()])
    self.assertAllEqual(np.round(streamed_val * 255).astype(np.uint8),
                        held.images)
    ds = streaming.train_stream(spec, 3, seed=0, augment=False,
                                data_dir=data_dir, split=train_split)
    batches = list(ds.take(len(kept.labels) // 3).as_numpy_iterator())
    streamed = np.round(np.concatenate([x for x, _ in batches]) * 255)
    self.assertEqual(_rows(streamed.astype(np.uint8)), _rows(kept.images))
    self.assertNoCommonElements(_rows(streamed.astype(np.uint8)),
                                _rows(held.images))


# One small run, shared: 3 epochs, evaluated after each, 60 images held out.
RUN = ["--max_train_examples=1500", "--max_test_examples=200",
       "--epochs=3", "--burn_in_epochs=1", "--eval_every=1",
       "--validation_split=60", "--allow_small_validation", "--num_steps=2",
       "--eval_num_steps=5",
       "--image_count=0", "--seed=4"]


@pytest.mark.slow
class ChosenOnValidationTest(tf.test.TestCase):
  """Through train.py and evaluate.py, as a user runs them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.run_dir = os.path.join(cls.root, "run")
    cls.result = commands.run(
        [sys.executable, TRAIN, *RUN, f"--model_dir={cls.run_dir}"],
        capture_output=True, text=True, timeout=600, check=False)
    cls.addClassCleanup(shutil.rmtree, cls.root, True)

  def setUp(self):
    super().setUp()
    self.assertEqual(self.result.returncode, 0, self.result.stderr[-3000:])
    with open(os.path.join(self.run_dir, "metrics.json")) as f:
      self.metrics = json.load(f)
    with open(os.path.join(self.run_dir, "log.csv")) as f:
      self.rows = list(csv.DictReader(f))

  def test_the_run_says_where_it_chooses(self):
    self.assertIn("validation: 60 training images held out",
                  self.result.stdout)
    held = self.metrics["validation"]
    self.assertEqual((held["size"], held["num_train"], held["chooses_best"]),
                     (60, 1500, True))
    self.assertIn("test split", held["note"])
    self.assertEqual(self.metrics["best"]["chosen_on"], "validation")
    with open(os.path.join(self.run_dir, "config.json")) as f:
      self.assertEqual(json.load(f)["validation_used"],
                       {k: held[k] for k in ("num_train", "offset", "size")})

  def test_best_epoch_is_the_validation_argmax_and_measured_there(self):
    robust = [float(r["val_pgd_accuracy"]) for r in self.rows]
    best = self.metrics["best"]
    self.assertEqual(best["epoch"], len(robust) - int(np.argmax(robust[::-1])))
    # Independently: the best classifier's PGD accuracy on the held-out
    # block (read from the data, not from the run) is what chose it.
    held = self.metrics["validation"]
    train, _, _ = data.load("mnist_offline", max_train=1500, max_test=1)
    images = train.images[held["offset"]:held["offset"] + held["size"]]
    labels = train.labels[held["offset"]:held["offset"] + held["size"]]
    classifier = keras.saving.load_model(
        os.path.join(self.run_dir, run_folder.CLASSIFIER_FILES["best"]))
    # The run evaluates in batches of eval_batch_size, with its seed (the
    # attack's random starts follow the batches).
    with open(os.path.join(self.run_dir, "config.json")) as f:
      settings = json.load(f)
    self.assertEqual((settings["eval_batch_size"], settings["seed"]),
                     (256, 4))
    again = evaluation.robust_accuracy(
        classifier, data.eval_dataset(data.ArrayData(images, labels), 256),
        0.1, 0.025, 5, seed=4)
    self.assertEqual(again["num_examples"], 60)
    self.assertAllClose(again["pgd_accuracy"], best["val_pgd_accuracy"])
    # Keras' per-epoch validation metrics are on the same 60 images.
    final = keras.saving.load_model(
        os.path.join(self.run_dir, "classifier.keras"))
    accuracy = np.mean(np.argmax(final.predict(
        images.astype(np.float32) / 255, verbose=0), -1) == labels)
    self.assertAllClose(float(self.rows[-1]["val_accuracy"]), accuracy,
                        atol=1e-6)

  def test_the_best_model_is_exported_with_its_labels(self):
    best = self.metrics["best"]
    self.assertEqual(best["export"], f"export_best/{best['epoch']}")
    self.assertEqual(self.metrics["export"], "export/3")
    self.assertEqual(os.listdir(os.path.join(self.run_dir, "export_best")),
                     [str(best["epoch"])])
    serving = tf.saved_model.load(os.path.join(
        self.run_dir, best["export"])).signatures["serving_uint8"]
    _, test, _ = data.load("mnist_offline", max_train=1, max_test=200)
    out = serving(images=tf.constant(test.images))
    self.assertAllClose(np.mean(out["classes"].numpy() == test.labels),
                        best["natural_accuracy"])
    self.assertAllEqual(out["class_name"].numpy().astype(str),
                        out["classes"].numpy().astype(str))  # digits

  def test_evaluate_gives_metrics_json_pgd_example_for_example(self):
    """`evaluate.py --attacks=pgd --num_steps=N` on a run folder measures
    what its metrics.json says, for the final and the best model: the same
    examples survive (the run's seed and batches are evaluate.py's
    defaults)."""
    _, test, _ = data.load("mnist_offline", max_train=1, max_test=200)
    epsilon, step = self.metrics["epsilon"], self.metrics["eval_step_size"]
    for checkpoint, key, stem in (("best", "best", "eval_best"),
                                  ("final", None, "eval")):
      result = commands.run(
          [sys.executable, EVALUATE, f"--model_path={self.run_dir}",
           f"--checkpoint={checkpoint}", "--attacks=pgd", "--num_steps=5",
           "--save_examples", "--nosanity_checks"],
          capture_output=True, text=True, timeout=300, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-2000:])
      with open(os.path.join(self.run_dir, f"{stem}.json")) as f:
        report = json.load(f)
      self.assertEqual((report["checkpoint"], report["seed"]),
                       (checkpoint, 4))
      reported = report["reports"][0]
      self.assertEqual(reported["num_examples"], 200)
      want = self.metrics[key] if key else self.metrics
      self.assertEqual(reported["natural_accuracy"],
                       want["natural_accuracy"])
      self.assertEqual(reported["robust_accuracy"]["pgd"],
                       want["pgd5_accuracy"])
      with np.load(os.path.join(self.run_dir, f"{stem}_examples.npz")) as f:
        examples = {k: f[k] for k in f.files}
      self.assertEqual(examples["robust_pgd"].shape, (1, 200))
      self.assertAllClose(examples["epsilons"], [epsilon])
      # The run's own measurement, per example: its classifier, test
      # images, batches (eval_batch_size), seed and attack.
      classifier = keras.saving.load_model(os.path.join(
          self.run_dir, run_folder.CLASSIFIER_FILES[checkpoint]))
      run = evaluation.robust_accuracy(
          classifier, data.eval_dataset(test, self.metrics["eval_batch_size"]),
          epsilon, step, 5, seed=4, per_example=True)
      self.assertEqual(run["pgd_accuracy"], want["pgd5_accuracy"])
      self.assertAllEqual(run["natural"], examples["natural"])
      self.assertAllEqual(run["robust"], examples["robust_pgd"][0])
      # Some examples fall to the attack and some survive: the comparison
      # is not between two all-True arrays.
      self.assertTrue(0 < np.mean(run["robust"]) < np.mean(run["natural"]))

  def test_evaluate_best_of_a_file_or_a_run_without_one_is_an_error(self):
    bare = os.path.join(self.root, "no_best")
    shutil.copytree(self.run_dir, bare)
    os.remove(os.path.join(bare, run_folder.CLASSIFIER_FILES["best"]))
    for path, message in (
        (bare, "has no best_classifier.keras: the most robust epoch is "
               "chosen on a validation split"),
        (os.path.join(self.run_dir, "classifier.keras"),
         "--checkpoint=best needs a run folder"),
        (os.path.join(self.run_dir, "export", "3"),
         "--checkpoint=best needs a run folder")):
      result = commands.run(
          [sys.executable, EVALUATE, f"--model_path={path}",
           "--checkpoint=best", "--dataset=mnist_offline"],
          capture_output=True, text=True, timeout=300, check=False)
      self.assertEqual(result.returncode, 1)
      self.assertIn(message, result.stderr)
      self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)
    self.assertFalse(os.path.exists(os.path.join(bare, "eval_best.json")))


def _as_written_before_the_validation_split(model_dir):
  """Rewrites a run's config.json as the version before the validation
  split wrote it (no such settings; the first 512 test images evaluated)."""
  path = os.path.join(model_dir, "config.json")
  with open(path) as f:
    old = json.load(f)
  for key in ("validation_split", "validation_used"):
    del old[key]
  old["eval_subset"] = 512
  with open(path, "w") as f:
    json.dump(old, f)


def _one_epoch_config(root, **settings):
  """A one-epoch AT run on 512 offline images, in `root`/run."""
  return TrainConfig.from_flat({
      "model_dir": os.path.join(root, "run"), "max_train_examples": 512,
      "max_test_examples": 64, "num_steps": 1, "eval_num_steps": 1,
      "epochs": 1, "burn_in_epochs": 0, "method": "at", "image_count": 0,
      "export": False, "seed": 1, "allow_small_validation": True,
      **settings})


@pytest.mark.slow
class ResumeTest(tf.test.TestCase):

  def tearDown(self):
    tf_config.disable_op_determinism()
    super().tearDown()

  def test_a_resume_holds_out_the_same_images_and_old_runs_resume(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    config = _one_epoch_config(root, eval_every=1, validation_split="64")
    experiment.train(config)
    with self.assertRaisesRegex(run_folder.RunFolderError,
                                "validation_split: '64' -> '32'"):
      experiment.train(config.replace(epochs=2, validation_split="32"))
    resumed = experiment.train(config.replace(epochs=2))
    self.assertEqual(resumed["resumed_at_epoch"], 1)
    self.assertEqual(resumed["validation"]["size"], 64)
    # A run of a version before the validation split (its config.json has
    # none) chose on the test split: it resumes with --validation_split=0.
    _as_written_before_the_validation_split(config.run.model_dir)
    with self.assertRaisesRegex(run_folder.RunFolderError,
                                "validation_split: '0' -> '64'"):
      experiment.train(config.replace(epochs=3))
    old_style = experiment.train(config.replace(
        epochs=3, validation_split="0", eval_subset=512))
    self.assertEqual(old_style["resumed_at_epoch"], 2)
    self.assertNotIn("best", old_style)
    self.assertFalse(old_style["validation"]["chooses_best"])

  def test_auto_keeps_its_block_when_eval_every_changes_on_a_resume(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root)
    config = _one_epoch_config(root, eval_every=0, max_train_examples=1024,
                               allow_small_validation=False)
    first = experiment.train(config)
    self.assertEqual(first["validation"]["size"], 0)  # nothing to choose
    # An older version's run of the same command (eval_every 0, the first
    # 512 test images) resumes with that command.
    _as_written_before_the_validation_split(config.run.model_dir)
    second = experiment.train(config.replace(epochs=2))
    self.assertEqual(second["resumed_at_epoch"], 1)
    # --eval_every may change on a resume; the training images may not.
    third = experiment.train(config.replace(epochs=3, eval_every=1))
    self.assertEqual(third["resumed_at_epoch"], 2)
    self.assertEqual(third["validation"]["size"], 0)
    self.assertNotIn("best", third)
    # ... and a new run with the same settings does hold out images.
    fresh = experiment.train(config.replace(
        model_dir=os.path.join(root, "fresh"), eval_every=1))
    # 2% of 1,024 is 20: raised to the minimum of 100.
    self.assertEqual(fresh["validation"]["size"], 100)


if __name__ == "__main__":
  tf.test.main()
