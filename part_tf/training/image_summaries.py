"""TensorBoard pictures of a PART run, and its entry in the hparams plugin."""

import numpy as np
import tensorflow as tf

import keras

from part_tf import pictures

# Tags of the per-step images: what each picture is.
STEP_TAGS = {
    "image": "pictures/1_image",
    "cam_overlay": "pictures/2_cam_over_image",
    "eps_map": "pictures/3_eps_map_red_full_blue_reduced",
    "perturbation": "pictures/4_perturbation_minus_to_plus_epsilon",
    "adversarial": "pictures/5_adversarial_image",
}
PANEL_TAG = "pictures/panel"
EPS_MAP_TAG = "budget/eps_map_values"
FRACTION_TAG = "budget/full_eps_fraction_per_image"


class ImagePanels(keras.callbacks.Callback):
  """Logs what PART does to a fixed set of images, as TensorBoard pictures.

  After the epochs it is due, it runs `pictures.compute_panel` (the model's
  own CAM, `eps_map_from_cam` and attack) on the images and writes to
  `log_dir`:

  * `pictures/panel`: the labelled grid image | CAM | eps_map |
    perturbation | adversarial, one row per image, with true and predicted
    classes;
  * `pictures/1_image` ... `pictures/5_adversarial_image`: each column's
    pictures on their own;
  * histograms of all `eps_map` values and of `full_eps_fraction` per image.

  A PART model shows its CAM budget (also at the end of burn-in, the budget
  about to be switched on); a base method shows its uniform budget.

  Args:
    log_dir: folder of the event files (a TensorBoard run).
    images: float images [N, H, W, C] in [0, 1].
    labels: their classes [N].
    burn_in_epochs: the run's burn-in.
    every_n_epochs: 0: at the end of burn-in and after every epoch after it;
      N > 0: after every N-th epoch and at the end of burn-in.
    class_names: names for the tiles (None: numbers).
    seed: seed of the attack's random start (the epoch is added).
  """

  def __init__(self, log_dir, images, labels, burn_in_epochs: int,
               every_n_epochs: int = 0, class_names=None, seed: int = 0):
    super().__init__()
    self.log_dir = log_dir
    self.images = np.asarray(images, np.float32)
    self.labels = np.asarray(labels)
    self.burn_in_epochs = burn_in_epochs
    self.every_n_epochs = every_n_epochs
    self.class_names = class_names
    self.seed = seed
    self._writer = None

  def due(self, epoch: int) -> bool:
    """Whether pictures are logged after 0-based `epoch`."""
    done = epoch + 1
    if done == self.burn_in_epochs:
      return True
    if self.every_n_epochs > 0:
      return done % self.every_n_epochs == 0
    return done > self.burn_in_epochs

  def on_epoch_end(self, epoch, logs=None):
    if len(self.labels) and self.due(epoch):
      self.log(epoch + 1)

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def log(self, step: int) -> pictures.Panel:
    """Computes and writes the pictures of the model as it is now."""
    panel = pictures.compute_panel(self.model, self.images, self.labels,
                                   seed=(self.seed, step))
    grid = pictures.figure_array(pictures.render_grid(
        panel, self.class_names,
        title=f"after epoch {step}: {panel.mask_rule} budget"
        + ("" if panel.mask_rule == "uniform"
           else f" from {panel.cam_method}")))
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)
    with self._writer.as_default(step=step):
      tf.summary.image(PANEL_TAG, grid[None], description=(
          "Per row one image: the image (true, predicted class), its CAM, "
          "eps_map (red: full budget, blue: reduced), x_adv - x (-epsilon "
          "black, +epsilon white) and x_adv (predicted class)."))
      count = len(self.labels)
      for name, images in pictures.tiles(panel).items():
        tf.summary.image(STEP_TAGS[name], images, max_outputs=count)
      tf.summary.histogram(EPS_MAP_TAG, panel.eps_map.ravel())
      tf.summary.histogram(FRACTION_TAG, panel.full_eps_fraction)
    self._writer.flush()
    return panel


def write_hparams(log_dir: str, hparams: dict, metrics: dict,
                  step: int) -> None:
  """Registers a run with TensorBoard's hparams plugin.

  Args:
    log_dir: the run's folder for it (a TensorBoard run of its own).
    hparams: setting name -> value (str, float, int or bool).
    metrics: metric name -> final value.
    step: the step of the metric scalars (e.g. the number of epochs).
  """
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default(step=step):
    hp.hparams_config(hparams=[hp.HParam(name) for name in hparams],
                      metrics=[hp.Metric(name) for name in metrics])
    hp.hparams(hparams)
    for name, value in metrics.items():
      tf.summary.scalar(name, float(value))
  writer.close()
