"""CAM -> eps_map: the mask rules of PART.

Each rule turns normalised maps (values in [0, 1], shape [B, H, W]) into a
per-element budget shaped like the images, with values in
{epsilon_low, epsilon} (or between them for `soft`):

* `zscore` (default): s = cam^2, per-image z-score of s, full `epsilon` where
  z > 1, `epsilon_low` elsewhere; the same for every channel.
* `official`: what the reference code does, for parity runs: bicubic resize,
  square, matplotlib's `jet` colormap to RGB, z-score over all H*W*3 values,
  full `epsilon` where z > 1. The mask differs per colour channel (RGB only).
* `soft`: epsilon_low + (epsilon - epsilon_low) * cam.

An image whose map carries no information (constant) gets the uniform budget
`epsilon`, i.e. its base method.
"""

import numpy as np
import tensorflow as tf

from part_tf.cam.maps import normalized_cam

MASK_RULES = ("zscore", "official", "soft")
RESIZE_FOR_RULE = {"zscore": "bilinear", "official": "bicubic",
                   "soft": "bilinear"}

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
      for c in ("red", "green", "blue")], axis=-1).astype(np.float32)


_JET_TABLE = _jet_table()


def jet_colormap(values: tf.Tensor) -> tf.Tensor:
  """matplotlib's `jet` for values in [0, 1]: [...] -> [..., 3] RGB."""
  index = tf.clip_by_value(
      tf.cast(tf.floor(values * _JET_N), tf.int32), 0, _JET_N - 1)
  return tf.gather(tf.constant(_JET_TABLE), index)


def _zscore(values: tf.Tensor, axes) -> tf.Tensor:
  mean, var = tf.nn.moments(values, axes=axes, keepdims=True)
  return (values - mean) / tf.maximum(tf.sqrt(var), 1e-12)


def eps_map_from_cam(cam: tf.Tensor, image_shape, epsilon, epsilon_low,
                     rule: str = "zscore") -> tf.Tensor:
  """Per-element budgets from raw CAMs.

  Args:
    cam: raw maps [B, h, w] at the feature resolution (see
      `ClassActivationMaps`).
    image_shape: (H, W, C) of the images being attacked.
    epsilon: full budget (important pixels).
    epsilon_low: reduced budget (the other pixels).
    rule: one of `MASK_RULES`.

  Returns:
    eps_map, float32 [B, H, W, C].
  """
  if rule not in MASK_RULES:
    raise ValueError(f"unknown mask rule {rule!r}; choose one of {MASK_RULES}")
  height, width, channels = image_shape
  if rule == "official" and channels != 3:
    raise ValueError("mask rule 'official' maps CAMs through an RGB colormap "
                     f"and needs 3-channel images, got {channels} channel(s)")
  cam01, informative = normalized_cam(cam, (height, width),
                                      RESIZE_FOR_RULE[rule])
  epsilon = tf.cast(epsilon, tf.float32)
  epsilon_low = tf.cast(epsilon_low, tf.float32)
  if rule == "zscore":
    full = _zscore(tf.square(cam01), axes=[1, 2]) > 1.0          # [B, H, W]
    eps = tf.where(full, epsilon, epsilon_low)[..., None]
    eps = tf.broadcast_to(eps, [tf.shape(cam01)[0], height, width, channels])
  elif rule == "official":
    rgb = jet_colormap(tf.square(cam01))                          # [B, H, W, 3]
    eps = tf.where(_zscore(rgb, axes=[1, 2, 3]) > 1.0, epsilon, epsilon_low)
  else:  # soft
    eps = epsilon_low + (epsilon - epsilon_low) * cam01[..., None]
    eps = tf.broadcast_to(eps, [tf.shape(cam01)[0], height, width, channels])
  return tf.where(informative[:, None, None, None], eps, epsilon)
