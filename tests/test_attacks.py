"""Weighted-budget PGD: budgets respected, agreement with cleverhans, XLA."""

from absl.testing import parameterized
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
import keras
import numpy as np
import tensorflow as tf

from part_tf import attacks
from part_tf.models import small_cnn


def _model():
  keras.utils.set_random_seed(1)
  return small_cnn((12, 12, 3), 5)


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, 12, 12, 3)).astype(np.float32)
  x[:, :2] = rng.integers(0, 2, size=(n, 2, 12, 3))  # pixels at 0 and 1
  return tf.constant(x), tf.constant(rng.integers(0, 5, n))


class PGDTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("uniform",), ("none",), ("gaussian",))
  def test_every_element_within_its_budget_and_in_range(self, init):
    model = _model()
    x, y = _batch()
    rng = np.random.default_rng(3)
    eps_map = tf.constant(rng.choice([0.0, 7 / 255, 8 / 255, 0.3],
                                     size=x.shape).astype(np.float32))
    init_fn = {"uniform": attacks.uniform_init, "none": attacks.no_init,
               "gaussian": attacks.gaussian_init(0.001)}[init]
    x_adv = attacks.pgd(lambda z: model(z), x, y, eps_map, step_size=0.1,
                        num_steps=5, init_fn=init_fn, seed=[1, 2]).numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps_map.numpy() + 1e-6))
    self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))
    # Zero-budget elements never move; the large budget is actually used.
    self.assertAllEqual(x_adv[eps_map.numpy() == 0], x.numpy()[eps_map.numpy() == 0])
    big = eps_map.numpy() == 0.3
    self.assertGreater(np.abs(x_adv - x.numpy())[big].max(), 0.25)

  def test_random_start_is_seeded_and_uniform_in_budget(self):
    x = tf.fill([4, 12, 12, 3], 0.5)
    eps = tf.fill(x.shape, 0.1)
    a = attacks.uniform_init(x, eps, tf.constant([3, 4]))
    b = attacks.uniform_init(x, eps, tf.constant([3, 4]))
    c = attacks.uniform_init(x, eps, tf.constant([3, 5]))
    self.assertAllEqual(a, b)
    self.assertNotAllEqual(a, c)
    delta = (a - x).numpy()
    self.assertLessEqual(np.abs(delta).max(), 0.1 + 1e-7)
    self.assertNear(delta.std(), 0.1 / np.sqrt(3), 0.01)  # U(-eps, eps)

  def test_matches_cleverhans_pgd(self):
    model = _model()
    x, y = _batch(32)
    ours = attacks.pgd(lambda z: model(z), x, y, 8 / 255, step_size=2 / 255,
                       num_steps=10, init_fn=attacks.no_init)
    theirs = projected_gradient_descent(
        model, x, 8 / 255, 2 / 255, 10, np.inf, clip_min=0.0, clip_max=1.0,
        y=y, rand_init=False, sanity_checks=False)
    # Same iterates; float rounding of the two projections may differ by ulps.
    self.assertAllClose(ours, theirs, atol=1e-6, rtol=0)

  def test_matches_a_numpy_reference_with_a_per_element_budget(self):
    model = _model()
    x, y = _batch(32)
    rng = np.random.default_rng(5)
    eps = rng.choice([1 / 255, 4 / 255, 8 / 255], size=x.shape).astype(
        np.float32)
    ours = attacks.pgd(lambda z: model(z), x, y, eps, step_size=2 / 255,
                       num_steps=6, init_fn=attacks.no_init).numpy()
    # The spec's loop, written out: step, clip to x +- eps, clip to [0, 1].
    x0, reference = x.numpy(), x.numpy().copy()
    for _ in range(6):
      z = tf.constant(reference)
      with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(attacks.cross_entropy(model(z), y))
      reference = reference + np.float32(2 / 255) * np.sign(
          tape.gradient(loss, z).numpy())
      reference = np.clip(np.clip(reference, x0 - eps, x0 + eps), 0.0, 1.0)
    self.assertAllClose(ours, reference, atol=1e-6, rtol=0)

  def test_pgd_raises_the_loss(self):
    model = _model()
    x, y = _batch(32)
    x_adv = attacks.pgd(lambda z: model(z), x, y, 0.1, 0.02, 10)
    self.assertGreater(
        float(tf.reduce_mean(attacks.cross_entropy(model(x_adv), y))),
        float(tf.reduce_mean(attacks.cross_entropy(model(x), y))) + 0.05)

  def test_compiles_under_xla_and_respects_budget(self):
    model = _model()
    x, y = _batch()
    eps_map = tf.where(tf.random.stateless_uniform(x.shape, [0, 1]) > 0.5,
                       8 / 255, 4 / 255)
    run = tf.function(
        lambda x, y, e: attacks.pgd(lambda z: model(z), x, y, e, 2 / 255, 7,
                                    seed=[0, 7]), jit_compile=True)
    x_adv = run(x, y, eps_map).numpy()
    self.assertTrue(np.all(np.abs(x_adv - x) <= eps_map.numpy() + 1e-6))
    self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))


if __name__ == "__main__":
  tf.test.main()
