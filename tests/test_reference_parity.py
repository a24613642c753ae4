"""`--dataset=X` alone against the PART reference run, setting by setting.

The rows of docs/method.md's table "Parity with the reference run" that no
other test file checks, without a GPU (the table names each row's test;
tests/test_repository_docs.py checks that every named test exists).
`REFERENCE` transcribes the reference run's settings from its code
(JiachengZ01/PART: train_eval_part.py's argparse defaults and its SVHN
overrides, utils.py's adjust_learning_rate and eval_test).
"""

import functools

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from part_tf import data
from part_tf.config import TrainConfig
from part_tf.data import validation
from part_tf.models import build_model
from part_tf.models import small_cnn
from part_tf.training import PARTModel
from part_tf.training import learning_rate
from part_tf.training.learning_rate import EpochLearningRate
from part_tf.training.learning_rate import LOG_KEY
from part_tf.training.learning_rate import reference_rate
from part_tf.presets import PRESETS

# The reference run (`python3 train_eval_part.py [--data SVHN]`).
_CIFAR10 = dict(model="ResNet18", epochs=80, warm_up=20, batch_size=128,
                lr=0.01, momentum=0.9, weight_decay=2e-4, epsilon=8 / 255,
                low_epsilon=7 / 255, num_steps=10, step_size=2 / 255,
                adjust_first=60, adjust_second=90, eval_steps=20,
                eval_epsilon=8 / 255, train_images=50_000)
REFERENCE = {
    "cifar10": _CIFAR10,
    # main(): `if args.data == 'SVHN'` sets step 1/255, weight decay 0.0035,
    # lr 0.01 and batch 128; eval_test steps by args.step_size.
    "svhn_cropped": {**_CIFAR10, "step_size": 1 / 255,
                     "weight_decay": 0.0035, "train_images": 73_257},
}


def _reference_rates(ref):
  """The reference's learning rate of every epoch: `warm_up` epochs at the
  optimiser's initial rate, then adjust_learning_rate(args, optimizer,
  epoch) before PART epoch 1, 2, ..., epochs - warm_up."""
  rates = [ref["lr"]] * ref["warm_up"]
  for epoch in range(1, ref["epochs"] - ref["warm_up"] + 1):
    lr = ref["lr"]
    if epoch >= ref["adjust_second"]:
      lr = ref["lr"] * 0.01
    elif epoch >= ref["adjust_first"]:
      lr = ref["lr"] * 0.1
    rates.append(lr)
  return rates


def _preset(dataset):
  """The TrainConfig of `--dataset=dataset` alone (the preset over the
  generic defaults; tests/test_dataset_defaults.py checks that train.py
  resolves the flags to exactly these)."""
  return TrainConfig.from_flat({"model_dir": "unused", "dataset": dataset,
                                **PRESETS[dataset]})


class ReferenceParityTest(tf.test.TestCase, parameterized.TestCase):

  def test_model_is_the_reference_resnet18(self):
    config = _preset("cifar10")
    self.assertEqual(config.model.model, "resnet18")
    spec = data.resolve_spec("cifar10")
    model = build_model(config.model.model, spec.image_shape, spec.num_classes,
                        mean=spec.mean, std=spec.std)
    self.assertEqual(
        sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        11_173_962)  # ResNet18(num_classes=10) of models/resnet.py

  @parameterized.parameters("cifar10", "cifar100", "svhn_cropped",
                            "tiny_imagenet")
  def test_input_is_raw_pixels(self, dataset):
    # The reference feeds ToTensor() images, [0, 1], to the model: no
    # normalisation anywhere. Its presets here build no Normalization
    # layer; --mean/--std (e.g. the dataset's statistics) add one.
    spec = data.resolve_spec(dataset)
    channels = spec.image_shape[-1]
    self.assertEqual((spec.mean, spec.std),
                     ((0.0,) * channels, (1.0,) * channels))
    self.assertIsNone(_preset(dataset).data.mean)
    model = build_model("small_cnn", spec.image_shape, spec.num_classes,
                        mean=spec.mean, std=spec.std)
    self.assertEmpty([l for l in model.layers
                      if isinstance(l, keras.layers.Normalization)])
    mean, std = data.datasets.STATISTICS[dataset]
    given = data.resolve_spec(dataset, mean=list(mean), std=list(std))
    self.assertEqual((given.mean, given.std), (mean, std))
    with self.assertRaisesRegex(ValueError, "--mean has 1 values; "
                                f"{dataset} has 3 channels"):
      data.resolve_spec(dataset, mean=[0.5])

  @parameterized.parameters(("cifar10", 4, True), ("svhn_cropped", 0, False))
  def test_augmentation(self, dataset, padding, flip):
    # CIFAR10: RandomCrop(32, padding=4) (zero fill) and
    # RandomHorizontalFlip; SVHN: ToTensor() only.
    spec = data.resolve_spec(dataset)
    self.assertEqual((spec.crop_padding, spec.flip), (padding, flip))
    self.assertTrue(_preset(dataset).data.augment)

  @parameterized.parameters("cifar10", "svhn_cropped")
  def test_training_images_and_batches(self, dataset):
    # The reference trains on the whole training split, 391 batches of 128
    # on CIFAR-10 (the last one of 80 images). The preset evaluates every 5
    # epochs and holds out min(2%, 1,000) images to choose the best epoch
    # on, and its steps are full batches: 382 of 49,000 CIFAR-10 images
    # (104 left out of each epoch, others each time).
    ref, config = REFERENCE[dataset], _preset(dataset)
    self.assertEqual(config.data.batch_size, ref["batch_size"])
    self.assertEqual((config.evaluation.eval_every,
                      config.evaluation.validation_split), (5, "auto"))
    held_out = validation.size_for(config.evaluation.validation_split,
                                   ref["train_images"], selects=True)
    self.assertEqual(held_out, 1000)
    trained = data.ArrayData(np.zeros(ref["train_images"] - held_out),
                             np.zeros(ref["train_images"] - held_out))
    self.assertEqual(data.steps_per_epoch(trained, config.data.batch_size),
                     (ref["train_images"] - held_out) // ref["batch_size"])
    if dataset == "cifar10":
      self.assertEqual(data.steps_per_epoch(trained, 128), 382)
      self.assertEqual(-(-ref["train_images"] // ref["batch_size"]), 391)

  @parameterized.parameters("cifar10", "svhn_cropped")
  def test_optimiser(self, dataset):
    # optim.SGD(lr=args.lr, momentum=args.momentum,
    # weight_decay=args.weight_decay): PyTorch's coupled decay, which
    # PARTModel adds to the gradients of every trainable variable
    # (tests/test_part_model.py checks that it adds wd * w).
    ref, config = REFERENCE[dataset], _preset(dataset)
    optimizer = config.optimizer
    self.assertEqual(
        (optimizer.optimizer, optimizer.learning_rate, optimizer.momentum),
        ("sgd", ref["lr"], ref["momentum"]))
    self.assertAllClose(optimizer.weight_decay, ref["weight_decay"])

  @parameterized.parameters("cifar10", "svhn_cropped")
  def test_schedule_per_epoch(self, dataset):
    # 80 epochs, 20 of burn-in: epochs 1-79 at 0.01, the 80th at 0.001
    # (PART epoch 60 reaches adjust_first; adjust_second, 90, never comes).
    ref, config = REFERENCE[dataset], _preset(dataset)
    optimizer = config.optimizer
    self.assertEqual((optimizer.epochs, optimizer.lr_schedule),
                     (ref["epochs"], "reference"))
    # The rule the run's EpochLearningRate callback applies (experiment).
    rule = learning_rate.epoch_rule(optimizer, config.budget.burn_in_epochs)
    ours = [rule(epoch) for epoch in range(optimizer.epochs)]
    expected = _reference_rates(ref)
    self.assertLen(expected, 80)
    self.assertAllClose(ours, expected, rtol=1e-12, atol=0)
    self.assertAllClose(ours, [0.01] * 79 + [0.001], rtol=1e-12, atol=0)

  def test_schedule_sets_each_epoch_and_survives_a_resume(self):
    # Inside Keras' fit: every update of an epoch uses the rule's rate (the
    # weight moves by steps * rate: d(loss)/dw = -1 per step), the logs get
    # it, and a run resumed with a new optimiser continues the schedule.
    rule = functools.partial(reference_rate, learning_rate=0.5,
                             burn_in_epochs=2, decay_epochs=(2, 3),
                             decay_factor=0.1)
    expected = [0.5, 0.5, 0.5, 0.05, 0.005]
    steps = 3
    x = np.ones((steps * 4, 1), np.float32)

    def fit(initial_epoch, epochs, start=0.0):
      inputs = keras.Input((1,))
      outputs = keras.layers.Dense(
          1, use_bias=False,
          kernel_initializer=keras.initializers.Constant(start))(inputs)
      model = keras.Model(inputs, outputs)
      model.compile(optimizer=keras.optimizers.SGD(0.5),
                    loss=lambda y, p: -tf.reduce_mean(p), jit_compile=False)
      weights, logs = [], []
      record = keras.callbacks.LambdaCallback(
          on_epoch_end=lambda e, l: (weights.append(
              float(model.layers[-1].kernel.numpy()[0, 0])),
                                     logs.append(l[LOG_KEY])))
      model.fit(x, x, batch_size=4, epochs=epochs, initial_epoch=initial_epoch,
                callbacks=[EpochLearningRate(rule), record], verbose=0,
                shuffle=False)
      return weights, logs

    weights, logs = fit(0, 5)
    self.assertAllClose(np.diff([0.0] + weights), np.multiply(expected, steps))
    self.assertAllClose(logs, expected)
    first, _ = fit(0, 3)
    resumed, resumed_logs = fit(3, 5, start=first[-1])
    self.assertAllClose(first + resumed, weights)
    self.assertAllClose(resumed_logs, expected[3:])

  @parameterized.parameters("cifar10", "svhn_cropped")
  def test_burn_in(self, dataset):
    # args.warm_up = 20 epochs of standard AT (uniform eps) before PART.
    ref, config = REFERENCE[dataset], _preset(dataset)
    self.assertEqual((config.budget.burn_in_epochs, config.method_name),
                     (ref["warm_up"], "part"))

  def test_cam_method_keeps_the_design_cards_default(self):
    # The reference's default is torchcam's GradCAM; the design card's,
    # kept by every preset, GradCAM++ (--cam=gradcam for the reference's).
    for dataset in REFERENCE:
      self.assertEqual(_preset(dataset).budget.cam, "gradcam_plus_plus")
      self.assertNotIn("cam", PRESETS[dataset])
    self.assertEqual(_preset("cifar10").budget.mask_rule, "zscore")

  def test_masks_belong_to_the_batch_being_attacked(self):
    # The reference computes the masks in a separate pass over the
    # reshuffled, re-augmented loader and applies them by batch index; here
    # each image's eps_map comes from that image: permuting the batch
    # permutes the maps.
    keras.utils.set_random_seed(3)
    model = PARTModel(small_cnn((16, 16, 3), 4), epsilon=8 / 255,
                      epsilon_low=4 / 255, burn_in_epochs=0)
    x = tf.random.stateless_uniform((8, 16, 16, 3), [1, 2])
    order = np.random.default_rng(0).permutation(8)
    maps = model.budget(x).numpy()
    self.assertGreater(len(np.unique(maps.reshape(8, -1), axis=0)), 1)
    self.assertAllEqual(model.budget(tf.gather(x, order)).numpy(),
                        maps[order])

  def test_batch_norm_is_in_inference_mode_while_crafting(self):
    # model.eval() before part_pgd: the CAMs and the attack neither use nor
    # update the batch statistics; the update (model.train()) does.
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU(name="cam_features")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    classifier = keras.Model(inputs, keras.layers.Dense(3)(h))
    model = PARTModel(classifier, epsilon=8 / 255, epsilon_low=4 / 255,
                      num_steps=3, burn_in_epochs=0)
    bn = classifier.layers[2]
    before = [v.numpy().copy() for v in bn.non_trainable_variables]
    x = tf.random.stateless_uniform((4, 8, 8, 3), [3, 4])
    y = tf.constant([0, 1, 2, 0])
    x_adv = model.craft(x, y, model.budget(x), tf.constant([0, 0], tf.int64))
    self.assertNotAllClose(x_adv, x)
    for a, b in zip(before, bn.non_trainable_variables):
      self.assertAllEqual(a, b.numpy())
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    model.train_on_batch(x, y)
    self.assertNotAllClose(before[0], bn.non_trainable_variables[0].numpy())

  @parameterized.parameters("cifar10", "svhn_cropped")
  def test_training_attack(self, dataset):
    # part_pgd(epsilon=8/255, num_steps=10, step_size=args.step_size) with
    # the 8/255 / 7/255 masks (generate_weighted_eps).
    ref, config = REFERENCE[dataset], _preset(dataset)
    self.assertEqual((config.attack.attack, config.attack.num_steps),
                     ("pgd", 10))
    self.assertAllClose(
        (config.budget.epsilon, config.budget.epsilon_low,
         config.attack.step_size),
        (ref["epsilon"], ref["low_epsilon"], ref["step_size"]))

  @parameterized.parameters("cifar10", "svhn_cropped")
  def test_evaluation_attack(self, dataset):
    # eval_test: PGD(eps=8/255, alpha=args.step_size, steps=20,
    # random_start=True) on the last epoch's model, whole test split.
    ref, config = REFERENCE[dataset], _preset(dataset)
    budget, step = config.evaluation_budget()
    self.assertEqual(config.evaluation.eval_num_steps, ref["eval_steps"])
    self.assertAllClose((budget, step), (ref["eval_epsilon"],
                                         ref["step_size"]))
    self.assertIsNone(config.data.max_test_examples)


if __name__ == "__main__":
  tf.test.main()
