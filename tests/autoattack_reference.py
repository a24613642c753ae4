"""AutoAttack's L-inf APGD run, transcribed to numpy for cross-checks.

The loop of `attack_single_run` in AutoAttack's `autoattack/autopgd_base.py`
(fra31/auto-attack) and, identical for L-inf, in torchattacks 3.4.0's
`torchattacks/attacks/apgd.py` and `apgdt.py`, for a linear classifier
`logits = x @ w + b` whose gradients are written out by hand. No random
start: the run starts at `x` (AutoAttack's `x_init`). Two details of the
reference that an implementation easily misses are kept:

* its losses per iteration sit in a zero-filled array, and the oscillation
  count of the first checkpoint compares the first iteration's loss with
  that array's last row, still 0 (Python's index -1);
* "reduced at the last checkpoint" starts true, so the first checkpoint
  never halves for lack of improvement.
"""

import numpy as np


def _softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def linear_loss_and_grad(x, y, w, b, loss, target=None):
  """Per-example loss, its gradient w.r.t. `x` and the predicted class.

  Args:
    x: [N, D] inputs; y: [N] labels; w: [D, K]; b: [K].
    loss: "ce" or "dlr" (targeted DLR when `target` is given).
    target: [N] target classes or None.
  """
  z = x @ w + b
  rows = np.arange(len(y))
  onehot = np.eye(w.shape[1])[y]
  if loss == "ce":
    p = _softmax(z)
    value = -np.log(p[rows, y])
    dz = p - onehot
  else:
    order = np.argsort(-z, axis=1)                  # descending
    first, third, fourth = (order[:, 0], order[:, 2], order[:, 3])
    if target is None:                              # untargeted DLR
      other = np.where(order[:, 0] == y, order[:, 1], order[:, 0])
      den = z[rows, first] - z[rows, third] + 1e-12
      dden = np.eye(w.shape[1])[first] - np.eye(w.shape[1])[third]
    else:
      other = target
      den = (z[rows, first] - 0.5 * (z[rows, third] + z[rows, fourth])
             + 1e-12)
      dden = (np.eye(w.shape[1])[first] - 0.5 * np.eye(w.shape[1])[third]
              - 0.5 * np.eye(w.shape[1])[fourth])
    num = -(z[rows, y] - z[rows, other])
    dnum = -onehot + np.eye(w.shape[1])[other]
    value = num / den
    dz = (dnum * den[:, None] - num[:, None] * dden) / den[:, None] ** 2
  return value, dz @ w.T, z.argmax(axis=1)


def apgd_run(x, y, w, b, eps, steps, loss="ce", target=None, rho=0.75):
  """One APGD run from `x`, as the reference; returns (x_best, robust,
  x_best_adv): the highest-loss point, whether no iterate was
  misclassified, and the last misclassified iterate."""
  n = len(y)
  k = max(int(0.22 * steps), 1)
  k_min = max(int(0.06 * steps), 1)
  decrease = max(int(0.03 * steps), 1)
  grad_of = lambda z: linear_loss_and_grad(z, y, w, b, loss, target)
  x_adv = x.copy()
  value, grad, pred = grad_of(x_adv)
  robust = pred == y
  x_best, x_best_adv, grad_best = x_adv.copy(), x_adv.copy(), grad.copy()
  loss_best = value.copy()
  loss_steps = np.zeros((steps, n))
  step = np.full((n, 1), 2.0 * eps)
  x_old = x_adv.copy()
  since = 0
  loss_best_last_check = loss_best.copy()
  reduced_last_check = np.ones(n, bool)
  box = lambda z: np.clip(np.clip(z, x - eps, x + eps), 0.0, 1.0)
  for i in range(steps):
    momentum = x_adv - x_old
    x_old = x_adv.copy()
    a = 0.75 if i > 0 else 1.0
    z = box(x_adv + step * np.sign(grad))
    x_adv = box(x_adv + (z - x_adv) * a + momentum * (1 - a))
    value, grad, pred = grad_of(x_adv)
    robust &= pred == y
    x_best_adv[pred != y] = x_adv[pred != y]
    loss_steps[i] = value
    better = value > loss_best
    x_best[better], grad_best[better] = x_adv[better], grad[better]
    loss_best[better] = value[better]
    since += 1
    if since == k:
      increases = sum(loss_steps[i - c] > loss_steps[i - c - 1]
                      for c in range(k))            # index -1: the zero row
      halve = (increases <= k * rho) | (
          ~reduced_last_check & (loss_best_last_check >= loss_best))
      reduced_last_check = halve.copy()
      loss_best_last_check = loss_best.copy()
      step[halve] /= 2.0
      x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
      since = 0
      k = max(k - decrease, k_min)
  return x_best, robust, x_best_adv
