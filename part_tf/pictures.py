"""What PART does, in pictures: x -> CAM -> eps_map -> x_adv for a few images.

`compute_panel` runs the train step's own pieces on a batch: the model's
`ClassActivationMaps`, `eps_map_from_cam` and its attack (`PARTModel.craft`),
never a copy of them. The rest turns a `Panel` into pictures:

* `tiles`: one RGB image per step and image, for TensorBoard;
* `render_grid`: a labelled matplotlib figure, one row per image (and per CAM
  method when several are shown) and the columns
  image | CAM | eps_map | perturbation | adversarial;
* `figure_png` (from `plots`): a figure as PNG bytes.

Colours: the CAM is matplotlib's `jet` over the image in gray; in `eps_map`
the full budget is red and the reduced budget blue (a mix where the budget
differs per colour channel or lies between, as with the `soft` rule); the
perturbation maps -epsilon..+epsilon to black..white (per channel for RGB).
"""

import dataclasses

import matplotlib

matplotlib.use("Agg")  # pylint: disable=wrong-import-position
from matplotlib import colors as mcolors  # pylint: disable=g-import-not-at-top
from matplotlib import figure as mfigure  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from part_tf.cam import CAM_METHODS  # pylint: disable=g-import-not-at-top,unused-import
from part_tf.cam import ClassActivationMaps  # pylint: disable=g-import-not-at-top
from part_tf.cam import eps_map_from_cam  # pylint: disable=g-import-not-at-top
from part_tf.cam.budgets import rule_map  # pylint: disable=g-import-not-at-top
from part_tf.data.class_names import KNOWN_NAMES  # pylint: disable=g-import-not-at-top
from part_tf.plots import figure_png  # pylint: disable=g-import-not-at-top

FULL_COLOUR = np.array(mcolors.to_rgb("#d62728"), np.float32)      # red
REDUCED_COLOUR = np.array(mcolors.to_rgb("#1f77b4"), np.float32)   # blue
COLUMNS = ("image", "CAM", "eps_map", "perturbation", "adversarial")

# Class names shown in the panels, per dataset.
CLASS_NAMES = KNOWN_NAMES


@dataclasses.dataclass
class Panel:
  """One pass x -> CAM -> eps_map -> x_adv over a few images (numpy).

  Attributes:
    images: clean images [N, H, W, C] in [0, 1].
    labels: true classes [N].
    predicted: classes predicted on the clean images [N].
    cam: the CAM resized to H x W and normalised to [0, 1] [N, H, W].
    eps_map: the budget of every element [N, H, W, C].
    adversarial: the adversarial images [N, H, W, C].
    predicted_adversarial: classes predicted on them [N].
    epsilon, epsilon_low: the full and reduced budgets.
    cam_method, mask_rule: how the budget was made ("uniform" rule: none).
  """
  images: np.ndarray
  labels: np.ndarray
  predicted: np.ndarray
  cam: np.ndarray
  eps_map: np.ndarray
  adversarial: np.ndarray
  predicted_adversarial: np.ndarray
  epsilon: float
  epsilon_low: float
  cam_method: str
  mask_rule: str

  @property
  def full_eps_fraction(self) -> np.ndarray:
    """Share of each image's elements at the full budget [N]."""
    full = self.eps_map >= self.epsilon * (1 - 1e-6)
    return full.reshape(len(full), -1).mean(axis=1)


def compute_panel(model, x, y, cam: str | None = None,
                  mask_rule: str | None = None,
                  reweighted: bool | None = None, seed=(0, 0)) -> Panel:
  """Runs the train step's pieces on `x` and collects what they make.

  Args:
    model: a `PARTModel`.
    x: images [N, H, W, C] in [0, 1].
    y: their classes [N].
    cam: CAM method (default: the model's).
    mask_rule: mask rule (default: the model's).
    reweighted: True: the CAM budget (what PART uses after burn-in); False:
      the uniform budget; None: the model's method decides.
    seed: stateless seed of the attack's random start.
  """
  x = tf.convert_to_tensor(x, tf.float32)
  y = tf.cast(tf.convert_to_tensor(y), tf.int32)
  cam = cam or model.cam
  rule = mask_rule or model.mask_rule
  if reweighted is None:
    reweighted = model.reweighted
  maps = ClassActivationMaps(model.classifier, cam, model.cam_layer)
  raw = maps(x)
  cam01 = rule_map(raw, x.shape[1:3], rule)
  if reweighted:
    eps_map = eps_map_from_cam(raw, x.shape[1:], model.epsilon,
                               model.epsilon_low, rule)
  else:
    eps_map = tf.fill(tf.shape(x), tf.constant(model.epsilon, tf.float32))
  x_adv = model.craft(x, y, eps_map, tf.constant(seed, tf.int64))
  logits = model.classifier(x, training=False)
  logits_adv = model.classifier(x_adv, training=False)
  return Panel(
      images=x.numpy(), labels=y.numpy(),
      predicted=np.argmax(logits, -1), cam=cam01.numpy(),
      eps_map=eps_map.numpy(), adversarial=x_adv.numpy(),
      predicted_adversarial=np.argmax(logits_adv, -1),
      epsilon=float(model.epsilon), epsilon_low=float(model.epsilon_low),
      cam_method=cam, mask_rule=rule if reweighted else "uniform")


# --- tiles: one RGB picture per step ------------------------------------------

def _rgb(images: np.ndarray) -> np.ndarray:
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def cam_overlay(panel: Panel) -> np.ndarray:
  """The CAM as a `jet` heat map over the gray image [N, H, W, 3]."""
  gray = panel.images.mean(axis=-1, keepdims=True)
  heat = matplotlib.colormaps["jet"](panel.cam)[..., :3]
  return (0.45 * _rgb(gray) + 0.55 * heat).astype(np.float32)


def eps_map_colours(panel: Panel) -> np.ndarray:
  """eps_map in two colours: full budget red, reduced budget blue [N, H, W, 3].

  Where the budget differs per channel or lies between the two, the colour is
  the mix in proportion to the mean budget's place between them.
  """
  span = max(panel.epsilon - panel.epsilon_low, 1e-12)
  share = np.clip((panel.eps_map.mean(axis=-1) - panel.epsilon_low) / span,
                  0.0, 1.0)[..., None]
  if panel.epsilon == panel.epsilon_low:
    share = np.ones_like(share)
  return (share * FULL_COLOUR + (1 - share) * REDUCED_COLOUR).astype(
      np.float32)


def perturbation(panel: Panel) -> np.ndarray:
  """x_adv - x with -epsilon..+epsilon mapped to 0..1 [N, H, W, 3]."""
  delta = (panel.adversarial - panel.images) / max(panel.epsilon, 1e-12)
  return _rgb(np.clip(0.5 + 0.5 * delta, 0.0, 1.0)).astype(np.float32)


def tiles(panel: Panel) -> dict:
  """{name: RGB images [N, H, W, 3] in [0, 1]}, one entry per column."""
  return {"image": _rgb(panel.images), "cam_overlay": cam_overlay(panel),
          "eps_map": eps_map_colours(panel),
          "perturbation": perturbation(panel),
          "adversarial": _rgb(panel.adversarial)}


# --- the labelled grid ----------------------------------------------------------

def _name(index, class_names):
  index = int(index)
  if class_names is not None and 0 <= index < len(class_names):
    return str(class_names[index])
  return str(index)


def render_grid(panels, class_names=None, title: str | None = None,
                row_labels=None, tile_inches: float = 1.7
                ) -> mfigure.Figure:
  """A labelled figure of one or more panels over the same images.

  Rows go image by image; with several panels (e.g. one per CAM method) each
  image gets a row per panel, labelled by `row_labels` (default: the panel's
  CAM method and mask rule).

  Args:
    panels: a `Panel` or a list of them (same images).
    class_names: names of the classes, or None for numbers.
    title: a line above the grid.
    row_labels: one label per panel.
    tile_inches: size of a tile.
  """
  panels = [panels] if isinstance(panels, Panel) else list(panels)
  if row_labels is None:
    row_labels = [f"{p.cam_method}, {p.mask_rule}" for p in panels]
  count = len(panels[0].labels)
  rows = [(i, p, row_labels[k]) for i in range(count)
          for k, p in enumerate(panels)]
  first = panels[0]
  # Layout in inches: row labels on the left, column titles on top, a line
  # of text under every tile.
  left = 1.75 if len(panels) > 1 else 0.45
  top = 0.95 if title else 0.6
  gap = 0.3
  width = left + tile_inches * len(COLUMNS) + 0.1 * (len(COLUMNS) - 1) + 0.1
  height = top + len(rows) * (tile_inches + gap) + 0.05
  fig = mfigure.Figure(figsize=(width, height), dpi=100)
  grid = fig.add_gridspec(
      len(rows), len(COLUMNS), left=left / width, right=1 - 0.1 / width,
      top=1 - top / height, bottom=gap / height, hspace=gap / tile_inches,
      wspace=0.1 / tile_inches)
  eps = f"{first.epsilon:.3g}"
  headers = (
      "image\n(true, predicted)",
      "CAM of the\npredicted class",
      f"eps_map: red {eps},\nblue {first.epsilon_low:.3g}",
      f"x_adv - x\n(-{eps} black, +{eps} white)",
      "adversarial x\n(predicted)")
  for r, (i, panel, label) in enumerate(rows):
    pictures = tiles(panel)
    true = _name(panel.labels[i], class_names)
    pred = _name(panel.predicted[i], class_names)
    adv = _name(panel.predicted_adversarial[i], class_names)
    gray = panel.images.shape[-1] == 1
    texts = (f"true {true}, pred {pred}", f"class {pred}",
             f"full budget: {panel.full_eps_fraction[i]:.0%}",
             f"pred {pred} -> {adv}", f"pred {adv}")
    shown = (panel.images[i, ..., 0] if gray else panel.images[i],
             pictures["cam_overlay"][i], pictures["eps_map"][i],
             pictures["perturbation"][i],
             panel.adversarial[i, ..., 0] if gray else panel.adversarial[i])
    for c, (picture, text) in enumerate(zip(shown, texts)):
      ax = fig.add_subplot(grid[r, c])
      ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None,
                vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      wrong = (c == 4 and panel.predicted_adversarial[i] != panel.labels[i]
               ) or (c == 0 and panel.predicted[i] != panel.labels[i])
      ax.set_xlabel(text, fontsize=8, labelpad=2,
                    color="#b00000" if wrong else "black")
      if r == 0:
        ax.set_title(headers[c], fontsize=8.5)
      if c == 0:
        ax.set_ylabel(f"#{i + 1}" + (f"\n{label}" if len(panels) > 1 else ""),
                      fontsize=8, rotation=0, ha="right", va="center",
                      labelpad=6)
  if title:
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
  return fig


def figure_array(fig: mfigure.Figure) -> np.ndarray:
  """The figure as an RGB uint8 array [H, W, 3]."""
  return tf.io.decode_png(figure_png(fig), channels=3).numpy()


def part_model_of_run(classifier, run: dict, overrides: dict, natural=None):
  """A PARTModel of `classifier` with the settings of the run that trained
  it (`config.json`, read as this version reads it), else the configs'
  defaults; `overrides` (flat settings, e.g. {"epsilon": 0.1}) win. Only
  its attack pieces and budgets are used: pictures ask for the CAM budget
  whatever the method."""
  from part_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from part_tf import run_settings  # pylint: disable=g-import-not-at-top
  from part_tf.training import PARTModel  # pylint: disable=g-import-not-at-top
  values = dict(run)
  run_settings.upgrade(values if values else None)
  values.update({k: v for k, v in overrides.items() if v is not None})
  config = config_lib.TrainConfig.from_flat(
      {k: v for k, v in values.items()
       if k in config_lib.all_settings() or k == "method"})
  budget, attack = config.budget, config.attack
  if budget.epsilon_low > budget.epsilon:
    raise ValueError(f"need epsilon_low <= epsilon, got {budget.epsilon_low} "
                     f"and {budget.epsilon}")
  return PARTModel(
      classifier, method=config.method, epsilon=budget.epsilon,
      epsilon_low=budget.epsilon_low, step_size=attack.step_size,
      num_steps=attack.num_steps, attack=attack.attack, cam=budget.cam,
      cam_layer=budget.cam_layer, mask_rule=budget.mask_rule,
      natural_classifier=natural, seed=config.run.seed)


def run_grid(model, dataset: str, test, cams, num_images: int, seed: int,
             where: str):
  """The figure of `num_images` test images (chosen by `seed`) with a row
  of panels per CAM method in `cams`."""
  chosen = np.sort(np.random.default_rng(seed).choice(
      len(test.labels), min(num_images, len(test.labels)), replace=False))
  images = test.images[chosen].astype(np.float32) / 255.0
  panels = [compute_panel(model, images, test.labels[chosen], cam=cam,
                          reweighted=True, seed=(seed, 0)) for cam in cams]
  title = (f"{dataset}, {where}: {model.mask_rule} budget, epsilon "
           f"{model.epsilon:.3g} / {model.epsilon_low:.3g}, "
           f"PGD-{model.num_steps}")
  return render_grid(panels, CLASS_NAMES.get(dataset), title=title,
                     row_labels=list(cams)), len(chosen)
