"""PART's pictures: the TensorBoard panels of a run, `scripts/visualize.py`,
and the PNG charts of `scripts/evaluate.py`."""

import os
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from part_tf import pictures
from part_tf.models import small_cnn
from part_tf.training import PARTModel
from part_tf.training import image_summaries
from tests import commands
from tests import test_cam  # the one-region model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_tensors(log_dir):
  """{tag: [(step, numpy value)]} of an event folder."""
  events = event_accumulator.EventAccumulator(
      log_dir, size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return {tag: [(e.step, tf.make_ndarray(e.tensor_proto))
                for e in events.Tensors(tag)]
          for tag in events.Tags()["tensors"]}


def decode(png_bytes):
  return tf.io.decode_png(png_bytes, channels=3).numpy()


def as_uint8(colour):
  """A float RGB colour as tf.summary.image stores it."""
  return tuple(tf.image.convert_image_dtype(
      tf.constant(colour, tf.float32), tf.uint8, saturate=True).numpy())


def assert_not_blank(test, image, ink=0.05):
  test.assertGreater(image.std(), 20.0)          # not one flat colour
  test.assertGreater(np.mean(image < 200), ink)  # more than white paper


class ImagePanelsTest(tf.test.TestCase):

  def test_callback_writes_the_pictures_of_each_due_epoch(self):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 4, 48).astype(np.int32)
    keras.utils.set_random_seed(0)
    model = PARTModel(small_cnn((12, 12, 3), 4), method="part", epsilon=0.1,
                      epsilon_low=0.03, step_size=0.03, num_steps=2,
                      burn_in_epochs=2)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    log_dir = tempfile.mkdtemp()
    panels = image_summaries.ImagePanels(log_dir, x[:3], y[:3],
                                         burn_in_epochs=2)
    self.assertEqual([e for e in range(5) if panels.due(e)], [1, 2, 3, 4])
    every_two = image_summaries.ImagePanels(log_dir, x[:3], y[:3], 3, 2)
    self.assertEqual([e for e in range(6) if every_two.due(e)], [1, 2, 3, 5])
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[panels])
    tensors = read_tensors(log_dir)
    expected = {image_summaries.PANEL_TAG, image_summaries.EPS_MAP_TAG,
                image_summaries.FRACTION_TAG,
                *image_summaries.STEP_TAGS.values()}
    self.assertEqual(set(tensors), expected)
    for tag in expected:  # the end of burn-in (epoch 2) and epoch 3
      self.assertEqual([step for step, _ in tensors[tag]], [2, 3], tag)
    for tag in image_summaries.STEP_TAGS.values():
      _, value = tensors[tag][-1]
      self.assertLen(value, 2 + 3)  # width, height, then one PNG per image
      self.assertEqual(value[:2].astype(int).tolist(), [12, 12])
      self.assertEqual(decode(value[2]).shape, (12, 12, 3))
    _, panel = tensors[image_summaries.PANEL_TAG][-1]
    grid = decode(panel[2])
    self.assertEqual(grid.shape[:2], (int(panel[1]), int(panel[0])))
    assert_not_blank(self, grid)
    # The end-of-burn-in panel already shows the CAM budget: some elements
    # full, most reduced.
    _, fractions = tensors[image_summaries.FRACTION_TAG][0]
    self.assertEqual(fractions.shape[-1], 3)  # histogram buckets
    eps_tile = decode(tensors[image_summaries.STEP_TAGS["eps_map"]][0][1][2])
    colours = {tuple(c) for c in eps_tile.reshape(-1, 3)}
    self.assertEqual(colours, {as_uint8(pictures.FULL_COLOUR),
                               as_uint8(pictures.REDUCED_COLOUR)})

  def test_eps_map_picture_is_full_exactly_on_the_known_region(self):
    classifier, region = test_cam.region_model()
    model = PARTModel(classifier, method="part", epsilon=8 / 255,
                      epsilon_low=4 / 255, step_size=1 / 255, num_steps=1)
    x = np.random.default_rng(1).uniform(size=(2, 16, 16, 1)).astype(
        np.float32)
    log_dir = tempfile.mkdtemp()
    callback = image_summaries.ImagePanels(log_dir, x, np.zeros(2, int), 0)
    callback.set_model(model)
    panel = callback.log(1)
    callback.on_train_end()
    self.assertAllClose(panel.eps_map[..., 0],
                        np.where(region, 8 / 255, 4 / 255)[None].repeat(2, 0))
    value = read_tensors(log_dir)[image_summaries.STEP_TAGS["eps_map"]][0][1]
    full = np.array(as_uint8(pictures.FULL_COLOUR))
    for png in value[2:]:
      picture = decode(png)
      is_full = np.all(picture == full, axis=-1)
      self.assertAllEqual(is_full, region)

  def test_panel_of_a_base_method_is_uniform(self):
    keras.utils.set_random_seed(0)
    model = PARTModel(small_cnn((12, 12, 3), 4), method="at", epsilon=0.1,
                      step_size=0.03, num_steps=2)
    x = np.random.default_rng(0).uniform(size=(2, 12, 12, 3)).astype(
        np.float32)
    panel = pictures.compute_panel(model, x, [0, 1])
    self.assertEqual(panel.mask_rule, "uniform")
    self.assertAllClose(panel.eps_map, np.full(x.shape, 0.1))
    self.assertTrue(np.all(np.abs(panel.adversarial - x) <= 0.1 + 1e-6))
    forced = pictures.compute_panel(model, x, [0, 1], reweighted=True)
    self.assertLess(forced.eps_map.mean(), 0.1)


class HParamsTest(tf.test.TestCase):

  def test_a_run_registers_its_settings_and_final_metrics(self):
    from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
    log_dir = tempfile.mkdtemp()
    image_summaries.write_hparams(
        log_dir, {"method": "part", "epsilon": 0.1, "mask_rule": "zscore",
                  "burn_in_epochs": 3},
        {"natural_accuracy": 0.97, "pgd20_accuracy": 0.9}, step=8)
    events = event_accumulator.EventAccumulator(
        log_dir, size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    self.assertIn("_hparams_/experiment", tags)
    self.assertIn("_hparams_/session_start_info", tags)
    content = events.SummaryMetadata(
        "_hparams_/session_start_info").plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content).session_start_info
    self.assertEqual(start.hparams["method"].string_value, "part")
    self.assertEqual(start.hparams["mask_rule"].string_value, "zscore")
    self.assertAllClose(start.hparams["epsilon"].number_value, 0.1)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/experiment").plugin_data.content
    ).experiment
    self.assertEqual(sorted(m.name.tag for m in experiment.metric_infos),
                     ["natural_accuracy", "pgd20_accuracy"])
    (event,) = events.Tensors("natural_accuracy")
    self.assertEqual(event.step, 8)
    self.assertAllClose(tf.make_ndarray(event.tensor_proto), 0.97)


def _grid_layout(num_rows, tile=1.7, left=0.45, top=0.95, gap=0.3, dpi=100):
  """Pixel boxes (row, column) -> (y0, y1, x0, x1) of `render_grid`'s tiles."""
  boxes = {}
  for r in range(num_rows):
    for c in range(5):
      x0 = (left + c * (tile + 0.1)) * dpi
      y0 = (top + r * (tile + gap)) * dpi
      boxes[r, c] = (int(y0), int(y0 + tile * dpi), int(x0),
                     int(x0 + tile * dpi))
  return boxes


@pytest.mark.slow
class ScriptsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    keras.utils.set_random_seed(0)
    cls.keras_file = os.path.join(cls.tmp, "model.keras")
    small_cnn((28, 28, 1), 10).save(cls.keras_file)

  def run_script(self, name, *args):
    return commands.run([sys.executable, os.path.join(ROOT, "scripts", name),
                         *args], capture_output=True, text=True, timeout=300,
                        cwd=ROOT)

  def visualize(self, name, *args):
    """Runs visualize.py on the test model; returns the decoded grid."""
    output = os.path.join(self.tmp, name)
    result = self.run_script("visualize.py", f"--model_path={self.keras_file}",
                             "--dataset=mnist_offline", "--epsilon=0.1",
                             "--epsilon_low=0.07", f"--output={output}", *args)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stderr, "")
    with open(output, "rb") as f:
      return decode(f.read())

  def test_visualize_writes_a_labelled_grid(self):
    grid = self.visualize("grid.png", "--num_images=3", "--step_size=0.025")
    # 3 rows of 5 tiles, laid out as render_grid computes it.
    self.assertEqual(grid.shape, (int(round((0.95 + 3 * 2.0 + 0.05) * 100)),
                                  int(round((0.45 + 5 * 1.7 + 0.4 + 0.1)
                                            * 100)), 3))
    assert_not_blank(self, grid)
    white = np.array([255, 255, 255])
    for (r, c), (y0, y1, x0, x1) in _grid_layout(3).items():
      tile = grid[y0 + 5:y1 - 5, x0 + 5:x1 - 5]
      self.assertLess(np.mean(np.all(tile == white, axis=-1)), 0.9, (r, c))
      if c == 2:  # eps_map: the two budget colours only
        full = np.round(pictures.FULL_COLOUR * 255)
        reduced = np.round(pictures.REDUCED_COLOUR * 255)
        close = lambda col: np.all(np.abs(tile - col) <= 2, axis=-1)
        self.assertGreater(np.mean(close(full) | close(reduced)), 0.98)
        self.assertGreater(np.mean(close(full)), 0.0)
    # Between the rows: paper, the tiles' labels, nothing cut.
    self.assertEqual(tuple(grid[2, 2]), (255, 255, 255))

  def test_visualize_all_cams_makes_a_row_per_method(self):
    grid = self.visualize("all.png", "--num_images=2", "--cam=all")
    self.assertEqual(grid.shape[0], int(round((0.95 + 8 * 2.0 + 0.05) * 100)))

  def test_visualize_refuses_a_saved_model_and_names_the_keras_file(self):
    from part_tf.export import export_classifier  # pylint: disable=g-import-not-at-top
    run = os.path.join(self.tmp, "run")
    os.makedirs(run, exist_ok=True)
    model = keras.saving.load_model(self.keras_file)
    model.save(os.path.join(run, "classifier.keras"))
    export = export_classifier(model, os.path.join(run, "export", "3"))
    result = self.run_script("visualize.py", f"--model_path={export}",
                             "--dataset=mnist_offline")
    self.assertNotEqual(result.returncode, 0)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    self.assertIn("SavedModel, which has no CAM layer", lines[0])
    self.assertIn(os.path.join(run, "classifier.keras"), lines[0])

  def test_evaluate_draws_curves_or_bars(self):
    for budgets, name in (("0.05,0.1,0.2", "curves"), ("0.1", "bars")):
      output = os.path.join(self.tmp, name)
      result = self.run_script(
          "evaluate.py", f"--model_path={self.keras_file}",
          "--dataset=mnist_offline", "--num_examples=64",
          "--attacks=fgsm,pgd", "--num_steps=3", "--nosanity_checks",
          f"--epsilon={budgets}", f"--output_dir={output}")
      self.assertEqual(result.returncode, 0, result.stderr)
      with open(os.path.join(output, "eval.png"), "rb") as f:
        chart = decode(f.read())
      self.assertEqual(chart.shape, (440, 700, 3))
      assert_not_blank(self, chart, ink=0.01)


if __name__ == "__main__":
  tf.test.main()
