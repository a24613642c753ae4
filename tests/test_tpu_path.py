"""The TPU code path, without a TPU: every shape static, and the train step
compiled by XLA from static shapes, in mixed_bfloat16 as on a TPU."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import keras

from part_tf import data
from part_tf.data import streaming
from part_tf.data import tfds_any
from part_tf.models import small_cnn
from part_tf.training import PARTModel


def _static(element_spec):
  return all(spec.shape.is_fully_defined()
             for spec in tf.nest.flatten(element_spec))


class TpuPathTest(tf.test.TestCase):

  def _arrays(self, n=70):
    rng = np.random.default_rng(0)
    return data.ArrayData(
        rng.integers(0, 256, (n, 16, 16, 3), np.uint8),
        rng.integers(0, 4, n).astype(np.int32))

  def test_the_pipelines_of_a_tpu_run_have_static_shapes(self):
    arrays = self._arrays()
    spec = data.DATASETS["cifar10"]
    train = data.train_dataset(arrays, spec, 32, seed=0, start_epoch=0,
                               epochs=2)
    self.assertTrue(_static(train.element_spec))
    dropped = data.eval_dataset(arrays, 32, drop_remainder=True)
    self.assertTrue(_static(dropped.element_spec))
    self.assertEqual(sum(len(y) for _, y in dropped), 64)  # 70 - 70 mod 32
    self.assertFalse(_static(data.eval_dataset(arrays, 32).element_spec))
    with tfds.testing.mock_data(num_examples=40):
      stream_spec = tfds_any.spec_for("tfds:imagenette", image_size=16)
      stream = streaming.train_stream(stream_spec, 8, seed=0)
      self.assertTrue(_static(stream.element_spec))
      self.assertTrue(_static(streaming.eval_stream(
          stream_spec, 8, drop_remainder=True).element_spec))

  def test_train_step_compiles_from_static_shapes_in_bfloat16(self):
    arrays = self._arrays(64)
    spec = data.DATASETS["cifar10"]
    x, y = next(iter(data.train_dataset(arrays, spec, 32, seed=0,
                                        start_epoch=0, epochs=1)))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      keras.utils.set_random_seed(0)
      model = PARTModel(small_cnn((16, 16, 3), 4), method="part",
                        epsilon=0.1, epsilon_low=0.02, step_size=0.03,
                        num_steps=2, burn_in_epochs=0)
      model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
      step = tf.function(model.train_step, jit_compile=True)
      hlo = step.experimental_get_compiler_ir((x, y))(stage="hlo")
      variables = model.classifier.trainable_variables
      before = [v.numpy().copy() for v in variables]
      logs = {k: float(v) for k, v in step((x, y)).items()}
      compute_dtype = model.classifier.layers[1].compute_dtype
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertEqual(compute_dtype, "bfloat16")
    self.assertIn("bf16[32,", hlo)  # the batch of 32 runs in bfloat16
    # XLA writes a dynamic dimension as `<=N` or `?`: there is none.
    self.assertNotIn("<=", hlo)
    self.assertNotIn("[?", hlo)
    self.assertTrue(np.isfinite(logs["loss"]))
    self.assertBetween(logs["eps_mean"], 0.021, 0.099)  # reweighted budgets
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before,
                                                              variables)]
    self.assertTrue(all(changed), "a step that updates every weight")


if __name__ == "__main__":
  tf.test.main()
