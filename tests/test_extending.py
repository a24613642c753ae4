"""Every kind of component plugs into part_tf through its public API alone,
each one definition in this file: a method with a hyper-parameter, a
regulariser, a model, a CAM method, a mask rule, a training attack, an
evaluation attack and a dataset. `register_components` registers them (what
a plug-in module does on import); they then work from Python (`fit`, the
evaluation loop, `part_tf.data.load`) and from `scripts/train.py
--plugins=MODULE`, with their own flags and flag choices, without an edit to
part_tf.

They are registered for this module's tests only (`setUpModule`) and
removed after them, so that the other test files, collected in the same
process, see the built-in registries.

The method is adversarial logit pairing (Kannan et al., 2018) with one
hyper-parameter; the regulariser is logit squeezing (the same paper).
"""

import csv
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import part_tf
from part_tf import attack_catalogue
from part_tf import attack_suite
from part_tf import attacks
from tests import commands
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS, EPS_LOW = 0.1, 0.07


# --- the components, each defined here ----------------------------------------

@dataclasses.dataclass(frozen=True)
class ALP(part_tf.methods.Method):
  """Adversarial logit pairing: CE on the AEs plus the squared distance of
  the clean and adversarial logits.

  Attributes:
    pairing: weight of the logit pairing term.
  """
  pairing: float = 0.5

  def train_loss(self, out, y):
    adv = out.logits("adv")
    pairing = tf.reduce_sum(tf.square(adv - out.logits("clean")), axis=-1)
    return attacks.cross_entropy(adv, y) + self.pairing * pairing


class PartALP(ALP):
  """ALP with PART's pixel-reweighted budget after burn-in."""
  reweighted = True


@dataclasses.dataclass(frozen=True)
class LogitSqueezing(part_tf.regularisers.Regulariser):
  """The squared norm of the adversarial logits.

  Attributes:
    weight: its weight.
  """
  weight: float = 0.05

  def term(self, out, y):
    del y
    return tf.reduce_sum(tf.square(out.logits("adv")), axis=-1)


def tiny_gap(input_shape, num_classes, mean=None, std=None):
  """A model: one convolution, global average pooling, logits. Its layers
  have their own names (no `cam_features`)."""
  inputs = keras.Input(shape=tuple(input_shape))
  h = inputs
  if mean is not None:
    h = keras.layers.Normalization(mean=list(mean),
                                   variance=[s * s for s in std])(h)
  h = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                          name="features")(h)
  h = keras.layers.GlobalAveragePooling2D()(h)
  return keras.Model(inputs, keras.layers.Dense(num_classes)(h),
                     name="tiny_gap")


def bright_cam(classifier, layer_name):
  """A CAM method: 1 on the pixels brighter than 0.9, 0 elsewhere (at the
  image's resolution, whatever the classifier)."""
  del classifier, layer_name
  return lambda x: tf.cast(x[..., 0] > 0.9, tf.float32)


def stripes(cam, image_shape, epsilon, epsilon_low):
  """A mask rule: `epsilon` on the even rows, `epsilon_low` on the odd ones,
  whatever the map (every map counts as informative)."""
  height, width, channels = image_shape
  rows = tf.where(tf.range(height) % 2 == 0, epsilon, epsilon_low)
  batch = tf.shape(cam)[0]
  return (tf.broadcast_to(rows[None, :, None, None],
                          [batch, height, width, channels]),
          tf.ones([batch], tf.bool))


def push_up(model_fn, x, y, eps_map, method, out, step_size, num_steps,
            seed):
  """A training attack: every pixel brightened by its whole budget."""
  del model_fn, y, method, out, step_size, num_steps, seed
  return tf.clip_by_value(x + eps_map, 0.0, 1.0)


def darken(config, model_fn, x, y, eps, seed):
  """An evaluation attack: every pixel darkened by the whole budget."""
  del config, model_fn, y, seed
  return tf.clip_by_value(x - eps, 0.0, 1.0)


# KMNIST (a TFDS dataset part_tf does not name), without augmentation.
KMNIST = part_tf.data.DatasetSpec(
    name="kmnist", tfds_name="kmnist", image_shape=(28, 28, 1),
    num_classes=10, mean=(0.19,), std=(0.35,), crop_padding=0, flip=False,
    train_split="train", test_split="test")


# A dataset outside TFDS: its spec's loader gives the arrays.
_RNG = np.random.default_rng(1)
DOTS_ARRAYS = (_RNG.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8),
               _RNG.integers(0, 3, 24),
               _RNG.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8),
               _RNG.integers(0, 3, 10))
DOTS = part_tf.data.DatasetSpec(
    name="dots", tfds_name=None, image_shape=(8, 8, 1), num_classes=3,
    mean=(0.5,), std=(0.3,), crop_padding=0, flip=False, train_split="train",
    test_split="test", loader=lambda: DOTS_ARRAYS)


def register_components():
  """Registers the components of this file, through the public API alone."""
  part_tf.methods.register("alp")(ALP)
  part_tf.methods.register("part_alp")(PartALP)
  part_tf.regularisers.register("logit_squeezing")(LogitSqueezing)
  part_tf.registry.MODELS.register("tiny_gap", tiny_gap)
  part_tf.cam.CAM_METHODS.register("bright", bright_cam)
  part_tf.cam.MASK_RULES.register("stripes", stripes)
  attack_catalogue.register("push_up", craft=push_up)
  attack_catalogue.register("darken", evaluate=darken)
  part_tf.data.register(KMNIST)
  part_tf.data.register(DOTS)


def unregister_components():
  """Removes them again (the registries as the other tests know them)."""
  registry = part_tf.registry
  for names, entries in (
      (("alp", "part_alp"), registry.METHODS),
      (("logit_squeezing",), registry.REGULARISERS),
      (("tiny_gap",), registry.MODELS), (("bright",), registry.CAM_METHODS),
      (("stripes",), registry.MASK_RULES),
      (("push_up", "darken"), registry.ATTACKS),
      (("kmnist", "dots"), registry.DATASETS)):
    for name in names:
      entries.remove(name)


def setUpModule():  # pylint: disable=invalid-name
  register_components()


def tearDownModule():  # pylint: disable=invalid-name
  unregister_components()
  shutil.rmtree(_plugin_dir(), ignore_errors=True)
  _plugin_dir.cache_clear()


@functools.lru_cache(maxsize=1)
def _plugin_dir():
  """A folder holding the plug-in module `extending_plugin`, which
  registers this file's components as any plug-in registers its own."""
  folder = tempfile.mkdtemp()
  with open(os.path.join(folder, "extending_plugin.py"), "w") as f:
    f.write("from tests.test_extending import register_components\n"
            "register_components()\n")
  return folder


def _run_python(code, timeout):
  """`python -c code` from the repository root, `extending_plugin`
  importable."""
  paths = [_plugin_dir(), ROOT, os.environ.get("PYTHONPATH")]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
  return commands.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                      capture_output=True, text=True, timeout=timeout,
                      check=False)


def _train_py(args, mock_examples=None, timeout=300):
  """`scripts/train.py ARGS` in a subprocess (on TFDS' mock data, made up
  examples of any TFDS dataset, with `mock_examples`)."""
  run = 'runpy.run_path("scripts/train.py", run_name="__main__")'
  if mock_examples:
    run = (f"with tfds.testing.mock_data(num_examples={mock_examples}):\n"
           f"  {run}")
  return _run_python(textwrap.dedent(f"""
      import runpy, sys
      import tensorflow_datasets as tfds
      sys.argv = ["train.py", *{list(args)!r}]
      """) + run, timeout)


def _data():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, 16).astype(np.int32)
  return x, y


def _part_model(classifier=None, **kwargs):
  """A compiled PARTModel of the test budgets around `classifier` (a fresh
  small CNN by default)."""
  tf.keras.utils.set_random_seed(1)
  if classifier is None:
    classifier = part_tf.build_model("small_cnn", (28, 28, 1), 10)
  settings = dict(epsilon=EPS, epsilon_low=EPS_LOW, step_size=0.025,
                  num_steps=2, burn_in_epochs=0)
  model = part_tf.PARTModel(classifier, **{**settings, **kwargs})
  model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
  return model


def _fit(model):
  """The logs of one epoch of `fit`: 2 steps of 8 examples."""
  x, y = _data()
  return model.fit(x, y, batch_size=8, epochs=1, shuffle=False,
                   verbose=0).history


def _two_steps(**kwargs):
  """The classifier's weights after 2 steps of `fit` (batches of 8) of a
  PARTModel made with `kwargs`, from the same start."""
  model = _part_model(**kwargs)
  history = _fit(model)
  return [w.numpy() for w in model.classifier.trainable_weights], history


def _choices(setting):
  """The choices of a training flag (`scripts/train.py --SETTING`)."""
  return part_tf.config.all_settings()[setting].choices()


@pytest.mark.slow
class ExtendingTest(tf.test.TestCase):

  def test_the_new_components_are_registered_with_their_settings(self):
    self.assertIs(part_tf.registry.METHODS.get("alp"), ALP)
    self.assertIs(part_tf.registry.REGULARISERS.get("logit_squeezing"),
                  LogitSqueezing)
    settings = part_tf.config.all_settings()
    self.assertEqual(settings["alp_pairing"].default, 0.5)
    self.assertEqual(settings["alp_pairing"].help,
                     "weight of the logit pairing term.")
    self.assertEqual(settings["logit_squeezing_weight"].flag_default, 0.0)
    config = part_tf.config.TrainConfig.from_flat(
        {"method": "part_alp", "alp_pairing": 2.0,
         "logit_squeezing_weight": 0.1})
    self.assertEqual(config.method, PartALP(pairing=2.0))
    self.assertEqual(config.regularisers, (LogitSqueezing(weight=0.1),))
    self.assertEqual(config.to_flat()["alp_pairing"], 2.0)
    self.assertTrue(part_tf.config.used_by("alp", "alp_pairing"))
    self.assertFalse(part_tf.config.used_by("at", "alp_pairing"))

  def test_the_new_method_trains_with_fit(self):
    at, _ = _two_steps(method="at")
    # With no pairing it is AT, bit for bit; with pairing it trains
    # otherwise, and its PART variant takes CAM budgets (burn-in 0).
    unpaired, _ = _two_steps(method=ALP(pairing=0.0))
    for a, b in zip(at, unpaired):
      self.assertAllEqual(a, b)
    paired, logs = _two_steps(method=ALP(pairing=1.0))
    self.assertNotAllClose(paired[0], at[0])
    self.assertTrue(np.isfinite(logs["loss"][0]))
    _, part_logs = _two_steps(method="part_alp")
    self.assertLess(part_logs["eps_mean"][0], EPS)

  def test_the_new_regulariser_trains_with_fit(self):
    at, _ = _two_steps(method="at")
    off, _ = _two_steps(method="at", regularisers=[LogitSqueezing(weight=0)])
    for a, b in zip(at, off):
      self.assertAllEqual(a, b)
    on, logs = _two_steps(method="at", regularisers=[LogitSqueezing()])
    self.assertNotAllClose(on[0], at[0])
    self.assertTrue(np.isfinite(logs["loss"][0]))

  def test_a_new_model_is_a_choice_and_trains_with_fit(self):
    self.assertIn("tiny_gap", _choices("model"))
    self.assertIn("tiny_gap", _choices("act_natural_model"))
    self.assertEqual(part_tf.config.TrainConfig.from_flat(
        {"model": "tiny_gap"}).model.model, "tiny_gap")
    # build_model hands the builder the data's statistics: the same
    # weights see 0.5 (std 0.25) as the model without statistics sees 0.
    tf.keras.utils.set_random_seed(2)
    plain = part_tf.build_model("tiny_gap", (28, 28, 1), 10)
    tf.keras.utils.set_random_seed(2)
    normalized = part_tf.build_model("tiny_gap", (28, 28, 1), 10,
                                     mean=(0.5,), std=(0.25,))
    grey = np.full((1, 28, 28, 1), 0.5, np.float32)
    self.assertAllClose(normalized(grey), plain(np.zeros_like(grey)))
    self.assertNotAllClose(plain(grey), plain(np.zeros_like(grey)))
    classifier = part_tf.build_model("tiny_gap", (28, 28, 1), 10)
    self.assertEqual(classifier.name, "tiny_gap")
    model = _part_model(classifier, method="part")
    # Its CAM layer is found without a name, and PART trains it on CAM
    # budgets (burn-in 0).
    self.assertEqual(model.cam_layer, "features")
    before = [w.numpy() for w in classifier.trainable_weights]
    logs = _fit(model)
    for old, new in zip(before, classifier.trainable_weights):
      self.assertNotAllClose(old, new)
    self.assertTrue(np.isfinite(logs["loss"][0]))
    self.assertBetween(logs["eps_mean"][0], EPS_LOW, EPS - 1e-3)

  def test_a_new_cam_method_is_what_drives_the_budget(self):
    self.assertIn("bright", _choices("cam"))
    model = _part_model(method="part", cam="bright", burn_in_epochs=1)
    self.assertEqual(model.cam, "bright")
    x, _ = _data()
    # The zscore rule gives epsilon exactly where the map is 1 (a tenth of
    # the pixels), once burn-in is over.
    expected = np.where(x > 0.9, EPS, EPS_LOW).astype(np.float32)
    self.assertAllEqual(model.budget(x), np.full_like(x, EPS))
    model.epoch.assign(1)
    self.assertAllEqual(model.budget(x), expected)
    logs = _fit(_part_model(method="part", cam="bright"))
    self.assertAllClose(logs["eps_mean"][0], expected.mean(), atol=1e-7)
    self.assertAllClose(logs["full_eps_fraction"][0], (x > 0.9).mean(),
                        atol=1e-7)

  def test_a_new_mask_rule_sets_the_budget_the_attack_respects(self):
    self.assertIn("stripes", _choices("mask_rule"))
    model = _part_model(method="part", mask_rule="stripes", step_size=EPS)
    self.assertEqual(model.mask_rule, "stripes")
    x, y = _data()
    x = 0.3 + 0.4 * x  # inside [0, 1] after any step within the budget
    eps_map = model.budget(x).numpy()
    self.assertAllEqual(eps_map[:, 0::2], np.full_like(x[:, 0::2], EPS))
    self.assertAllEqual(eps_map[:, 1::2], np.full_like(x[:, 1::2], EPS_LOW))
    x_adv = model.craft(tf.constant(x), tf.constant(y), eps_map,
                        tf.constant([0, 0], tf.int64)).numpy()
    moved = np.abs(x_adv - x)
    self.assertAllLessEqual(moved - eps_map, 1e-6)
    # PGD's sign steps of size epsilon reach the rule's bound on each row.
    self.assertAllClose(moved[:, 0::2].max(), EPS, atol=1e-6)
    self.assertAllClose(moved[:, 1::2].max(), EPS_LOW, atol=1e-6)
    logs = _fit(model)
    self.assertAllClose(logs["eps_mean"][0], (EPS + EPS_LOW) / 2, atol=1e-7)
    self.assertAllClose(logs["full_eps_fraction"][0], 0.5)

  def test_a_new_training_attack_crafts_what_the_loss_sees(self):
    self.assertIn("push_up", attack_catalogue.training_attacks())
    self.assertNotIn("push_up", attack_catalogue.evaluation_attacks())
    self.assertIn("push_up", _choices("attack"))
    model = _part_model(method="at", attack="push_up")
    x, y = _data()
    x_adv = np.clip(x + EPS, 0.0, 1.0)
    self.assertAllEqual(
        model.craft(x, y, model.budget(x), tf.constant([0, 0], tf.int64)),
        x_adv)
    # The step's loss and adversarial accuracy are those of these AEs
    # (taken before the step's update).
    logits = model.classifier(x_adv, training=False)
    loss = attacks.cross_entropy(logits, y).numpy().mean()
    accuracy = (np.argmax(logits, axis=-1) == y).mean()
    logs = model.train_on_batch(x, y, return_dict=True)
    self.assertAllClose(logs["loss"], loss, rtol=1e-5)
    self.assertAllClose(logs["adv_accuracy"], accuracy)

  def test_a_new_evaluation_attack_runs_in_the_evaluation_loop(self):
    self.assertIn("darken", attack_catalogue.evaluation_attacks())
    self.assertNotIn("darken", _choices("attack"))  # it crafts nothing
    with self.assertRaisesRegex(ValueError, "attack must be one of"):
      part_tf.config.TrainConfig.from_flat({"attack": "darken"})
    # A model that says "bright" (class 0) when the mean pixel passes 0.5:
    # darkening by 0.2 fools it exactly on the bright images below 0.7.
    model_fn = lambda x: tf.stack(
        [tf.reduce_mean(x, axis=[1, 2, 3]) - 0.5,
         0.5 - tf.reduce_mean(x, axis=[1, 2, 3])], axis=-1)
    levels = np.linspace(0.03, 0.97, 16, dtype=np.float32)
    x = np.broadcast_to(levels[:, None, None, None],
                        (16, 28, 28, 1)).copy()
    y = (levels < 0.5).astype(np.int32)
    fooled = (levels > 0.5) & (levels - 0.2 < 0.5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    report = part_tf.Evaluator(model_fn, 0.2, ["darken"],
                               keep_adversarial=True)(dataset,
                                                      per_example=True)
    self.assertEqual(report["natural_accuracy"], 1.0)
    self.assertAllEqual(report["robust"]["darken"], ~fooled)
    self.assertAllClose(report["robust_accuracy"]["darken"],
                        1 - fooled.mean())
    self.assertBetween(fooled.sum(), 1, 15)
    self.assertAllClose(report["adversarial"],
                        np.where(fooled[:, None, None, None],
                                 np.clip(x - 0.2, 0, 1), x))
    suite = attack_suite.evaluate(model_fn, dataset, 0.2, ["darken"])
    self.assertEqual(suite["robust_accuracy"], report["robust_accuracy"])

  def test_a_new_dataset_loads_through_its_spec(self):
    self.assertEqual(
        part_tf.config.TrainConfig.from_flat({"dataset": "kmnist"}).data
        .dataset, "kmnist")
    self.assertEqual(part_tf.data.resolve_spec("kmnist"), KMNIST)
    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                      rng.integers(0, 10, n))
              for split, n in (("train", 20), ("test", 6))}

    def as_dataset(builder, split, **kwargs):
      del builder, kwargs
      images, labels = splits[str(split)]
      return tf.data.Dataset.from_tensor_slices({"image": images,
                                                 "label": labels})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
      train, test, spec = part_tf.data.load("kmnist", max_train=12)
    self.assertEqual(spec, KMNIST)
    self.assertAllEqual(train.images, splits["train"][0][:12])
    self.assertAllEqual(train.labels, splits["train"][1][:12])
    self.assertAllEqual(test.images, splits["test"][0])
    # The spec says: no crop, no flip: the training batches are the images.
    batches = part_tf.data.train_dataset(train, spec, batch_size=4, seed=0,
                                         start_epoch=0, epochs=1)
    seen = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    rows = lambda images: sorted(image.tobytes() for image in images)
    self.assertEqual(rows((seen * 255).round().astype(np.uint8)),
                     rows(train.images))

  def test_a_dataset_outside_tfds_loads_through_its_loader(self):
    train, test, spec = part_tf.data.load("dots", max_train=20)
    self.assertEqual(spec, DOTS)
    self.assertAllEqual(train.images, DOTS_ARRAYS[0][:20])
    self.assertAllEqual(train.labels, DOTS_ARRAYS[1][:20])
    self.assertAllEqual(test.images, DOTS_ARRAYS[2])
    self.assertEqual(train.labels.dtype, np.int32)
    self.assertEqual(
        part_tf.config.TrainConfig.from_flat({"dataset": "dots"}).data
        .dataset, "dots")
    # The loader's arrays are checked, with the dataset named.
    for arrays, message in (
        ((DOTS_ARRAYS[0] / 255.0, *DOTS_ARRAYS[1:]), "train images must be "
         "uint8"),
        ((*DOTS_ARRAYS[:3], DOTS_ARRAYS[3] + 3), r"test labels must be in "
         r"\[0, 3\), got 3..5"),
        (DOTS_ARRAYS[:2], "must return .train_images, train_labels")):
      bad = dataclasses.replace(DOTS, name="bad_dots",
                                loader=lambda a=arrays: a)
      with self.assertRaisesRegex(ValueError, "^Dataset 'bad_dots': .*"
                                  + message):
        part_tf.data.load("bad_dots", spec=bad)
    with self.assertRaisesRegex(ValueError, "needs a tfds_name or a loader"):
      part_tf.data.register(dataclasses.replace(DOTS, name="no_data",
                                                loader=None))
    self.assertNotIn("no_data", part_tf.registry.DATASETS)

  def test_train_py_trains_a_plug_in_method_with_its_flags(self):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    self.addCleanup(shutil.rmtree, os.path.dirname(model_dir))
    result = _train_py(
        ["--plugins=extending_plugin", "--method=part_alp",
         "--alp_pairing=0.25", "--logit_squeezing_weight=0.01",
         *TINY_TRAIN, "--epochs=2", "--burn_in_epochs=1", "--noexport",
         f"--model_dir={model_dir}"])
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("with part_alp (epsilon 0.1, epsilon_low 0.07", result.stdout)
    self.assertIn("alp_pairing 0.25", result.stdout)
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["method"], config["alp_pairing"],
                      config["logit_squeezing_weight"]),
                     ("part_alp", 0.25, 0.01))
    with open(os.path.join(model_dir, "metrics.json")) as f:
      self.assertEqual(json.load(f)["method"], "part_alp")
    # evaluate.py takes the same plug-in: the run, and its attack.
    paths = [_plugin_dir(), ROOT, os.environ.get("PYTHONPATH")]
    evaluated = commands.run(
        [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
         "--plugins=extending_plugin", f"--model_path={model_dir}",
         "--attacks=darken,fgsm", "--num_examples=16", "--nosanity_checks"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ,
                 PYTHONPATH=os.pathsep.join(filter(None, paths))))
    self.assertEqual(evaluated.returncode, 0, evaluated.stderr[-3000:])
    with open(os.path.join(model_dir, "eval.json")) as f:
      report, = json.load(f)["reports"]
    self.assertEqual(set(report["robust_accuracy"]), {"darken", "fgsm"})
    self.assertLessEqual(report["robust_accuracy"]["darken"],
                         report["natural_accuracy"])

  def test_train_py_takes_a_plug_in_dataset_model_cam_rule_and_attack(self):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    self.addCleanup(shutil.rmtree, os.path.dirname(model_dir))
    chosen = {"dataset": "kmnist", "model": "tiny_gap", "cam": "bright",
              "mask_rule": "stripes", "attack": "push_up"}
    result = _train_py(
        ["--plugins=extending_plugin", "--method=part",
         *[f"--{name}={value}" for name, value in chosen.items()],
         *TINY_TRAIN, "--epochs=2", "--burn_in_epochs=1", "--noexport",
         "--image_count=0", f"--model_dir={model_dir}"], mock_examples=256)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("training tiny_gap on kmnist with part (epsilon 0.1, "
                  "epsilon_low 0.07, bright CAM, stripes mask", result.stdout)
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual({name: config[name] for name in chosen}, chosen)
    self.assertEqual(config["dataset_spec"],
                     {"image_shape": [28, 28, 1], "num_classes": 10,
                      "mean": [0.19], "std": [0.35]})
    # Burn-in at the uniform budget, then the stripes' budget.
    with open(os.path.join(model_dir, "log.csv")) as f:
      eps_mean = [float(row["eps_mean"]) for row in csv.DictReader(f)]
    self.assertAllClose(eps_mean, [EPS, (EPS + EPS_LOW) / 2], atol=1e-6)

  def test_without_the_plug_in_the_method_is_a_one_line_error(self):
    result = commands.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--method=alp", f"--model_dir={tempfile.mkdtemp()}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    self.assertEqual(result.returncode, 1)
    self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)
    self.assertIn("alp", result.stderr)
    missing = commands.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--plugins=no_such_module", f"--model_dir={tempfile.mkdtemp()}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    self.assertEqual(missing.returncode, 1)
    self.assertEqual(missing.stderr.strip(),
                     "error: --plugins: cannot import no_such_module: "
                     "ModuleNotFoundError: No module named 'no_such_module'")


if __name__ == "__main__":
  tf.test.main()
