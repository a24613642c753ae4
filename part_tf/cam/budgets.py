"""CAM -> eps_map: the mask rules of PART.

Each rule turns a batch of raw maps [B, h, w] into a per-element budget
shaped like the images, with values in {epsilon_low, epsilon} (or between
them for `soft`):

* `zscore` (default): bilinear resize to the image, ReLU, min-max to
  [0, 1], s = cam^2, per-image z-score of s, full `epsilon` where z > 1,
  `epsilon_low` elsewhere; the same for every channel.
* `official`: what the reference code does, in its order, for parity runs:
  min-max normalise at the feature resolution (torchcam's, with its 1e-8),
  resize bicubically as PIL does, square, matplotlib's `jet` colormap to
  RGB, z-score over all H*W*3 values, full `epsilon` where z > 1. The mask
  differs per colour channel (RGB only).
* `soft`: epsilon_low + (epsilon - epsilon_low) * cam01.

An image whose map carries no information (constant, e.g. all zero) gets
the uniform budget `epsilon`, i.e. its base method, under every rule. (The
reference's `official` rule colours such a map `jet(0)` everywhere and gives
the blue channel `epsilon`, red and green `epsilon_low`: a budget that says
nothing about the image; docs/method.md lists this difference.)
"""

from __future__ import annotations

import numpy as np

from part_tf import lazy
from part_tf import registry

# Imported when a budget is first computed: the flags list the rules without
# loading TensorFlow (see part_tf/lazy.py).
tf = lazy.load("tensorflow")
maps = lazy.load("part_tf.cam.maps")
# torchcam's guard against a constant map in its min-max normalisation.
_TORCHCAM_EPS = 1e-8

# matplotlib's `jet` (LinearSegmentedColormap, N=256): the segment data of
# matplotlib/_cm.py. Checked against matplotlib itself in tests/test_cam.py.
_JET_SEGMENTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0),
              (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
_JET_N = 256


def _jet_table() -> np.ndarray:
  grid = np.linspace(0.0, 1.0, _JET_N)
  return np.stack([
      np.interp(grid, *np.array(_JET_SEGMENTS[c]).T)
      for c in ("red", "green", "blue")], axis=-1)


_JET_TABLE = _jet_table()  # float64, like matplotlib's


def jet_colormap(values: tf.Tensor, dtype=None) -> tf.Tensor:
  """matplotlib's `jet` for values in [0, 1]: [...] -> [..., 3] RGB.

  The index is matplotlib's: floor(values * 256) in the values' own
  precision, values of 1 and above taking the last colour.
  """
  index = tf.clip_by_value(
      tf.cast(tf.floor(values * _JET_N), tf.int32), 0, _JET_N - 1)
  return tf.gather(tf.constant(_JET_TABLE, dtype or tf.float32), index)


def _exact_dtype():
  """float64 for the `official` rule's arithmetic, as the reference (PIL,
  NumPy) computes; float32 on a TPU, which has no float64."""
  if tf.config.list_logical_devices("TPU"):
    return tf.float32
  return tf.float64


def official_map(cam: tf.Tensor, size, dtype=None) -> tf.Tensor:
  """The map that the `official` rule colours: [B, h, w] -> [B, H, W].

  As the reference code makes it: torchcam's ReLU and min-max
  normalisation at the feature resolution, `(cam - min) / (max(cam - min)
  + 1e-8)` in float32, then PIL's bicubic resize of that float image to
  the image size (`resize_like_pil`). Values may overshoot [0, 1] a little
  (bicubic ringing), as in the reference.
  """
  cam = tf.nn.relu(tf.cast(cam, tf.float32))
  cam = cam - tf.reduce_min(cam, axis=[1, 2], keepdims=True)
  cam = cam / (tf.reduce_max(cam, axis=[1, 2], keepdims=True) + _TORCHCAM_EPS)
  return maps.resize_like_pil(cam, size, dtype or _exact_dtype())


def _official_budget(cam, height, width, epsilon, epsilon_low, dtype=None):
  """The reference's `craft_weight_matrix` + `generate_weighted_eps`."""
  dtype = dtype or _exact_dtype()
  rgb = jet_colormap(tf.square(official_map(cam, (height, width), dtype)),
                     dtype)                                       # [B, H, W, 3]
  return tf.where(_zscore(rgb, axes=[1, 2, 3]) > 1.0, epsilon, epsilon_low)


def rule_map(cam: tf.Tensor, size, rule: str = "zscore") -> tf.Tensor:
  """The map in [0, 1] that `rule` thresholds, at the image size (for
  pictures): `normalized_cam`'s for zscore and soft, `official_map`'s
  (clipped to [0, 1]) for official."""
  if rule == "official":
    return tf.clip_by_value(official_map(cam, size), 0.0, 1.0)
  return maps.normalized_cam(cam, size, "bilinear")[0]


def _informative(cam: tf.Tensor) -> tf.Tensor:
  """bool [B]: which raw maps [B, h, w] vary after their ReLU (a constant
  map carries no information about where the image matters)."""
  cam = tf.nn.relu(tf.cast(cam, tf.float32))
  span = tf.reduce_max(cam, axis=[1, 2]) - tf.reduce_min(cam, axis=[1, 2])
  return span > 1e-12


def _zscore(values: tf.Tensor, axes) -> tf.Tensor:
  mean, var = tf.nn.moments(values, axes=axes, keepdims=True)
  return (values - mean) / tf.maximum(tf.sqrt(var),
                                      tf.constant(1e-12, values.dtype))


@registry.MASK_RULES.register("zscore")
def zscore(cam, image_shape, epsilon, epsilon_low):
  """Full `epsilon` where the squared map's per-image z-score is above 1,
  `epsilon_low` elsewhere, the same for every channel. Returns (eps_map,
  which maps are informative)."""
  height, width, channels = image_shape
  cam01, informative = maps.normalized_cam(cam, (height, width), "bilinear")
  full = _zscore(tf.square(cam01), axes=[1, 2]) > 1.0          # [B, H, W]
  eps = tf.where(full, epsilon, epsilon_low)[..., None]
  eps = tf.broadcast_to(eps, [tf.shape(cam01)[0], height, width, channels])
  return eps, informative


@registry.MASK_RULES.register("official")
def official(cam, image_shape, epsilon, epsilon_low):
  """The reference code's rule, in its order (module doc); RGB only."""
  height, width, channels = image_shape
  if channels != 3:
    raise ValueError("mask rule 'official' maps CAMs through an RGB colormap "
                     f"and needs 3-channel images, got {channels} channel(s)")
  eps = _official_budget(cam, height, width, epsilon, epsilon_low)
  return eps, _informative(cam)


official.channels = 3  # what the rule needs of the images


@registry.MASK_RULES.register("soft")
def soft(cam, image_shape, epsilon, epsilon_low):
  """epsilon_low + (epsilon - epsilon_low) * the normalised map."""
  height, width, channels = image_shape
  cam01, informative = maps.normalized_cam(cam, (height, width), "bilinear")
  eps = epsilon_low + (epsilon - epsilon_low) * cam01[..., None]
  eps = tf.broadcast_to(eps, [tf.shape(cam01)[0], height, width, channels])
  return eps, informative


def eps_map_from_cam(cam: tf.Tensor, image_shape, epsilon, epsilon_low,
                     rule: str = "zscore") -> tf.Tensor:
  """Per-element budgets from raw CAMs.

  Args:
    cam: raw maps [B, h, w] at the feature resolution (see
      `ClassActivationMaps`).
    image_shape: (H, W, C) of the images being attacked.
    epsilon: full budget (important pixels).
    epsilon_low: reduced budget (the other pixels).
    rule: a registered mask rule (`part_tf.registry.MASK_RULES`): a function
      `(cam, image_shape, epsilon, epsilon_low) -> (eps_map, informative)`.

  Returns:
    eps_map, float32 [B, H, W, C]: the rule's, and the uniform `epsilon`
    for an image whose map carries no information.
  """
  eps_rule = registry.MASK_RULES.get(rule)
  epsilon = tf.cast(epsilon, tf.float32)
  epsilon_low = tf.cast(epsilon_low, tf.float32)
  eps, informative = eps_rule(cam, tuple(image_shape), epsilon, epsilon_low)
  return tf.where(informative[:, None, None, None], eps, epsilon)
