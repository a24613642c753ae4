"""AutoAttack (Croce & Hein, ICML 2020) for any Keras classifier, with
AutoAttack's names.

  adversary = part_tf.AutoAttack(model, norm="Linf", eps=8 / 255,
                                 version="standard")
  x_adv = adversary.run_standard_evaluation(x_test, y_test, bs=250)

`model` is any Keras classifier (or function) of images in [0, 1], NHWC, to
logits; a model that expects other inputs (0-255 pixels, its own
normalisation) is wrapped first, e.g. `lambda x: model(x * 255.0)`. The
attacks are part_tf's batched TensorFlow implementations (APGD-CE, APGD-T,
FAB-T, Square), run as AutoAttack runs them: each only on the examples still
robust, through `part_tf.evaluation.Evaluator` (the loop behind every number
part_tf reports). Versions:

  standard   AutoAttack standard: APGD-CE, APGD-T (9 targets), FAB-T
             (9 targets), Square (5,000 queries); 100 iterations each.
  plus       AutoAttack plus: more attacks and 5 restarts.
  reference  the PART reference code's "AutoAttack" (torchattacks 3.4.0,
             10 iterations): only to compare with the paper's AA column.

Only the L-inf norm is available. The differences from the authors' code
(random draws tied to each example, batching within each batch) are listed
in docs/evaluation.md.
"""

import time

import numpy as np

from part_tf import evaluation
from part_tf.evaluation_config import PRESETS

VERSIONS = {"standard": "aa_standard", "plus": "aa_plus",
            "reference": "aa_reference"}


class AutoAttack:
  """AutoAttack of a classifier under an L-inf budget.

  Args:
    model: a Keras classifier or a function: images in [0, 1] (NHWC) ->
      logits.
    norm: "Linf" (the only norm available).
    eps: the L-inf budget.
    version: "standard", "plus" or "reference" (see the module doc).
    seed: base of the attacks' random draws.
    verbose: print AutoAttack's progress lines.
    log_path: also append the lines to this file.

  Attributes:
    report: the last evaluation's report (`Evaluator`'s, sequential).

  Example:
    >>> adversary = AutoAttack(classifier, eps=8 / 255)
    >>> x_adv = adversary.run_standard_evaluation(x_test, y_test, bs=250)
    >>> adversary.report["worst_case_accuracy"]      # robust accuracy
  """

  def __init__(self, model, norm: str = "Linf", eps: float = 8 / 255,
               version: str = "standard", seed: int = 0,
               verbose: bool = True, log_path: str | None = None):
    if norm != "Linf":
      raise ValueError(f"part_tf's AutoAttack runs the L-inf norm only, not "
                       f"{norm!r}")
    if version not in VERSIONS:
      raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got "
                       f"{version!r}")
    if not 0 < eps < 1:
      raise ValueError(f"eps must be in (0, 1) for images in [0, 1], got "
                       f"{eps}")
    self.model, self.norm, self.eps = model, norm, float(eps)
    self.version, self.seed = version, seed
    self.verbose, self.log_path = verbose, log_path
    self.preset = PRESETS[VERSIONS[version]]
    self.report = None

  @property
  def attacks_to_run(self) -> tuple:
    return tuple(self.preset.attacks)

  def run_standard_evaluation(self, x, y, bs: int = 250,
                              return_labels: bool = False):
    """Runs the version's attacks in turn, each on the examples still
    robust, and prints AutoAttack's lines.

    Args:
      x: images [N, H, W, C] in [0, 1] (NumPy or a tensor).
      y: integer labels [N].
      bs: batch size.
      return_labels: also return the model's labels of the adversarial
        images.

    Returns:
      The adversarial images (each example's clean image where no attack
      fooled the model), and with `return_labels` their predicted labels.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32).reshape(-1)
    if x.ndim != 4 or len(x) != len(y):
      raise ValueError(f"x must be images [N, H, W, C] with one label each, "
                       f"got x {x.shape} and y {y.shape}")
    if x.min() < 0 or x.max() > 1:
      raise ValueError("x must be images in [0, 1]")
    self._log(f"using {self.version} version including "
              f"{', '.join(a.replace('_', '-') for a in self.attacks_to_run)}.")
    started = time.perf_counter()
    evaluator = evaluation.Evaluator(
        self.model, self.eps, self.attacks_to_run, self.preset.config,
        self.seed, sequential=True, keep_adversarial=True)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(bs)
    self.report = evaluator(dataset)
    self._log_report(time.perf_counter() - started)
    x_adv = self.report["adversarial"]
    self._log(f"max Linf perturbation: {np.abs(x_adv - x).max():.5f}, nan "
              f"in tensor: {int(np.isnan(x_adv).sum())}, max: "
              f"{x_adv.max():.5f}, min: {x_adv.min():.5f}")
    self._log(f"robust accuracy: {100 * self.report['worst_case_accuracy']:.2f}%")
    if return_labels:
      model_fn = evaluation.as_model_fn(self.model)
      labels = np.concatenate([
          np.argmax(model_fn(tf.constant(x_adv[i:i + bs])).numpy(), -1)
          for i in range(0, len(x_adv), bs)])
      return x_adv, labels
    return x_adv

  def _log_report(self, seconds):
    r = self.report
    self._log(f"initial accuracy: {100 * r['natural_accuracy']:.2f}%")
    for step in r["sequence"]:
      name = step["attack"].replace("_", "-")
      self._log(f"robust accuracy after {name.upper()}: "
                f"{100 * step['robust_accuracy']:.2f}% (attacked "
                f"{step['examples_attacked']}, {step['seconds']:.1f} s; "
                f"total time {seconds:.1f} s)")

  def _log(self, line):
    if self.verbose:
      print(line, flush=True)
    if self.log_path:
      with open(self.log_path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
