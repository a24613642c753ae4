"""Per-dataset flag defaults: applied only to flags the user did not set."""

import tempfile

from absl import flags
from absl.testing import parameterized
import tensorflow as tf

from part_tf_flags.budgets import DEFINE_budget
from part_tf_flags.dataset_defaults import apply_dataset_defaults
from part_tf_flags.dataset_defaults import DATASET_DEFAULTS
from part_tf_flags.train_flags import DATASET_NAMES


def _flag_values(argv):
  fv = flags.FlagValues()
  flags.DEFINE_enum("dataset", "cifar10", DATASET_NAMES, "", flag_values=fv)
  DEFINE_budget("epsilon", "8/255", "", flag_values=fv)
  DEFINE_budget("epsilon_low", "7/255", "", flag_values=fv)
  DEFINE_budget("step_size", "2/255", "", flag_values=fv)
  flags.DEFINE_float("weight_decay", 2e-4, "", flag_values=fv)
  flags.register_multi_flags_validator(
      ["epsilon", "epsilon_low"], lambda f: f["epsilon_low"] <= f["epsilon"],
      message="--epsilon_low must not be larger than --epsilon",
      flag_values=fv)
  apply_dataset_defaults(["prog", *argv], fv)
  fv(["prog", *argv])
  return fv


class DatasetDefaultsTest(tf.test.TestCase, parameterized.TestCase):

  def test_svhn_gets_the_reference_step_and_weight_decay(self):
    fv = _flag_values(["--dataset=svhn_cropped"])
    self.assertEqual(fv.step_size, 1 / 255)
    self.assertEqual(fv.weight_decay, 3.5e-3)
    self.assertEqual(fv.epsilon, 8 / 255)

  def test_explicit_flags_win(self):
    fv = _flag_values(["--dataset=svhn_cropped", "--step_size=3/255"])
    self.assertEqual(fv.step_size, 3 / 255)
    self.assertEqual(fv.weight_decay, 3.5e-3)

  def test_cifar_keeps_the_generic_defaults(self):
    fv = _flag_values(["--dataset=cifar10"])
    self.assertEqual((fv.epsilon, fv.epsilon_low, fv.step_size,
                      fv.weight_decay), (8 / 255, 7 / 255, 2 / 255, 2e-4))

  @parameterized.parameters(("mnist",), ("fashion_mnist",), ("mnist_offline",))
  def test_digits_get_a_digit_sized_budget(self, name):
    fv = _flag_values([f"--dataset={name}"])
    self.assertEqual((fv.epsilon, fv.epsilon_low, fv.step_size),
                     (0.1, 0.07, 0.025))

  def test_a_default_that_breaks_a_validator_is_an_error(self):
    fv = _flag_values(["--dataset=mnist", "--epsilon_low=0.2", "--epsilon=0.3"])
    self.assertEqual((fv.epsilon, fv.epsilon_low), (0.3, 0.2))
    with self.assertRaisesRegex(flags.IllegalFlagValueError, "epsilon_low"):
      _flag_values(["--dataset=mnist", "--epsilon_low=0.2"])

  def test_defaults_decide_validity(self):
    # 0.09 <= mnist's epsilon 0.1, though > the generic 8/255.
    fv = _flag_values(["--dataset=mnist", "--epsilon_low=0.09"])
    self.assertEqual((fv.epsilon, fv.epsilon_low), (0.1, 0.09))

  def test_dataset_from_a_flagfile(self):
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
      f.write("--dataset=svhn_cropped\n")
    path = f.name
    fv = _flag_values([f"--flagfile={path}"])
    self.assertEqual(fv.weight_decay, 3.5e-3)

  def test_names_are_datasets(self):
    self.assertContainsSubset(DATASET_DEFAULTS, DATASET_NAMES)


if __name__ == "__main__":
  tf.test.main()
