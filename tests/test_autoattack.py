"""AutoAttack's sequential evaluation (`evaluate_sequence`) and presets:
the per-example AND of the attacks, only still-robust examples attacked
(counted model calls), the final accuracy below every attack's, the PART
reference code's evaluation (torchattacks 3.4.0) beside AutoAttack's, and
`scripts/evaluate.py --preset`."""

import dataclasses
import functools
import inspect
import json
import os
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from part_tf import attack_catalogue
from part_tf import attack_suite
from part_tf import registry
from part_tf import attacks
from part_tf import data
from part_tf import evaluation
from part_tf.attacks import noise
from part_tf.evaluation_config import SuiteConfig
from part_tf.models import small_cnn
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDARD = ("apgd_ce", "apgd_t", "fab_t", "square")

# What the PART reference code evaluates as "AutoAttack": craft_ae.py calls
# torchattacks.AutoAttack(model, norm='Linf', eps=epsilon, version='standard')
# with torchattacks==3.4.0 (its requirements.txt). Read in that version's
# source (pip download --no-deps torchattacks==3.4.0):
# torchattacks/attacks/autoattack.py, AutoAttack.__init__: n_classes=10;
#   version 'standard' is MultiAttack([APGD(loss='ce', n_restarts=1),
#   APGDT(n_classes=n_classes, n_restarts=1), FAB(multi_targeted=True,
#   n_classes=n_classes, n_restarts=1), Square(n_queries=5000,
#   n_restarts=1)]): every other setting is the class's default, and
#   MultiAttack (wrappers/multiattack.py) runs each attack on the images
#   that survived the ones before.
TA_ORDER = ("apgd_ce", "apgd_t", "fab_t", "square")
TA_N_CLASSES = 10
# torchattacks/attacks/apgd.py, APGD.__init__: steps=10, n_restarts=1,
# rho=.75 (loss 'ce': nn.CrossEntropyLoss).
TA_APGD_STEPS, TA_APGD_RESTARTS, TA_APGD_RHO = 10, 1, 0.75
# torchattacks/attacks/apgdt.py, APGDT.__init__: steps=10, n_restarts=1,
# rho=.75, n_target_classes = n_classes - 1 (targets: the 2nd, 3rd, ... most
# likely classes of the clean logits, each run `steps` iterations).
TA_APGDT_STEPS, TA_APGDT_RESTARTS, TA_APGDT_RHO = 10, 1, 0.75
TA_APGDT_TARGETS = TA_N_CLASSES - 1
# torchattacks/attacks/fab.py, FAB.__init__: steps=10, n_restarts=1,
# alpha_max=0.1, eta=1.05, beta=0.9, n_target_classes = n_classes - 1.
TA_FAB_STEPS, TA_FAB_RESTARTS = 10, 1
TA_FAB_ALPHA_MAX, TA_FAB_ETA, TA_FAB_BETA = 0.1, 1.05, 0.9
TA_FAB_TARGETS = TA_N_CLASSES - 1
# torchattacks/attacks/square.py, Square.__init__: p_init=.8,
# resc_schedule=True (p's schedule stretched to n_queries), loss 'margin';
# n_queries=5000 from autoattack.py.
TA_SQUARE_QUERIES, TA_SQUARE_P_INIT, TA_SQUARE_RESCALE = 5000, 0.8, True
# AutoAttack's order and attacks, at settings small enough for CPU tests.
SMALL = attack_suite.SuiteConfig(apgd_steps=10, fab_steps=10,
                                 square_queries=100, num_targets=3,
                                 square_rescale_schedule=False)
EPS = 0.1


@functools.lru_cache(maxsize=None)
def _trained_model():
  """Trained once per process; the tests only read it."""
  keras.utils.set_random_seed(0)
  train, test, spec = data.load("mnist_offline", max_train=2048, max_test=96)
  model = small_cnn(spec.image_shape, 10, mean=spec.mean, std=spec.std)
  model.compile(optimizer=keras.optimizers.Adam(2e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(train.images / 255.0, train.labels, batch_size=64, epochs=2,
            verbose=0)
  return model, test


@pytest.mark.slow
class SequenceTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model, cls.test = _trained_model()
    cls.calls = tf.Variable(0, dtype=tf.int64)
    model, calls = cls.model, cls.calls

    def model_fn(x):
      # Counts the examples the model sees (inside compiled attacks too).
      calls.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
      return model(x, training=False)
    cls.model_fn = staticmethod(model_fn)
    cls.ds = data.eval_dataset(cls.test, 32)
    cls.n = len(cls.test.labels)

  def _counted(self, fn, *args, **kwargs):
    self.calls.assign(0)
    result = fn(*args, **kwargs)
    return result, int(self.calls.numpy())

  def test_presets_are_autoattacks_versions(self):
    standard = attack_suite.PRESETS["aa_standard"]
    self.assertEqual(standard.attacks, STANDARD)
    c = standard.config
    self.assertEqual((c.apgd_steps, c.apgd_restarts, c.num_targets,
                      c.fab_steps, c.fab_restarts, c.square_queries,
                      c.square_rescale_schedule),
                     (100, 1, 9, 100, 1, 5000, False))
    plus = attack_suite.PRESETS["aa_plus"]
    self.assertEqual(plus.attacks, ("apgd_ce", "apgd_dlr", "fab", "square",
                                    "apgd_t", "fab_t"))
    self.assertEqual((plus.config.apgd_restarts, plus.config.fab_restarts),
                     (5, 5))

  def test_aa_reference_is_torchattacks_340s_standard(self):
    preset = attack_suite.PRESETS["aa_reference"]
    self.assertEqual(preset.attacks, TA_ORDER)
    c = preset.config
    # One iteration count serves APGD-CE and APGD-T, one target count
    # APGD-T and FAB-T: torchattacks gives them the same values.
    self.assertEqual(TA_APGD_STEPS, TA_APGDT_STEPS)
    self.assertEqual(TA_APGDT_TARGETS, TA_FAB_TARGETS)
    self.assertEqual(
        (c.apgd_steps, c.apgd_restarts, c.num_targets, c.fab_steps,
         c.fab_restarts, c.square_queries, c.square_rescale_schedule),
        (TA_APGD_STEPS, TA_APGD_RESTARTS, TA_APGDT_TARGETS, TA_FAB_STEPS,
         TA_FAB_RESTARTS, TA_SQUARE_QUERIES, TA_SQUARE_RESCALE))
    # APGD-T makes one run per target (no restarts to set), and the
    # settings the suite does not pass are the attacks' defaults.
    self.assertEqual(TA_APGDT_RESTARTS, 1)
    default = lambda fn, name: inspect.signature(fn).parameters[name].default
    self.assertEqual(default(attacks.apgd, "rho"), TA_APGD_RHO)
    self.assertEqual(default(attacks.apgd_targeted, "rho"), TA_APGDT_RHO)
    self.assertEqual(default(attacks.square, "p_init"), TA_SQUARE_P_INIT)
    self.assertEqual(
        (default(attacks.fab, "alpha_max"), default(attacks.fab, "eta"),
         default(attacks.fab, "beta")),
        (TA_FAB_ALPHA_MAX, TA_FAB_ETA, TA_FAB_BETA))
    # The only differences from AutoAttack standard: 10 iterations instead
    # of 100, and Square's schedule stretched to its queries.
    standard = attack_suite.PRESETS["aa_standard"]
    self.assertEqual(standard.attacks, preset.attacks)
    self.assertEqual(dataclasses.replace(
        c, apgd_steps=100, fab_steps=100, square_rescale_schedule=False),
                     standard.config)
    # Its reports say what it is.
    self.assertIn("torchattacks 3.4.0", preset.description)
    self.assertIn("NOT AutoAttack standard", preset.description)
    self.assertIn("not AutoAttack", preset.final)
    self.assertEqual(standard.final, "AutoAttack")

  def test_targets_from_ten_classes_unless_fewer(self):
    # torchattacks' n_classes=10 gives 9 targets; with C < 10 classes it
    # fails, and the preset takes min(9, C - 1). Counted model calls: per
    # target, the start, the iterations and the final check (APGD-T), or
    # the iterations and the final check of the examples not yet fooled
    # (FAB-T, at a budget of 0 that fools nothing: clean check, then one
    # per iteration and one final).
    config = attack_suite.PRESETS["aa_reference"].config
    calls = tf.Variable(0, dtype=tf.int64)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(6, 4, 4, 1)), tf.float32)
    for classes in (5, 10, 12):
      w = tf.constant(rng.normal(size=(16, classes)), tf.float32)

      def model_fn(z, w=w):
        calls.assign_add(1)
        return tf.matmul(tf.reshape(z, [-1, 16]), w)
      y = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)
      targets = min(TA_N_CLASSES - 1, classes - 1)
      with self.subTest(classes=classes, attack="apgd_t"):
        calls.assign(0)
        registry.ATTACKS.get("apgd_t").evaluate(config, model_fn, x, y, 0.0,
                                                (0, 0))
        self.assertEqual(int(calls.numpy()),
                         1 + targets * (config.apgd_steps + 2))
      with self.subTest(classes=classes, attack="fab_t"):
        calls.assign(0)
        registry.ATTACKS.get("fab_t").evaluate(config, model_fn, x, y, 0.0,
                                               (0, 0))
        self.assertEqual(int(calls.numpy()),
                         1 + targets * (2 * config.fab_steps + 1))

  def test_aa_standard_at_least_as_strong_as_aa_reference(self):
    # Per example: what survives AutoAttack survives the reference's
    # 10-iteration version. Both presets as they are (100 against 10
    # iterations, Square's schedule), with the same cuts to keep the test
    # short (compiling each target's run dominates its time): one batch, 2
    # targets and 300 Square queries. An empirical property of a trained
    # model (on another, 10 iterations can fool an example 100 miss).
    eps = 0.15
    reports = {name: attack_suite.evaluate_sequence(
        self.model_fn, self.ds.take(1), eps,
        attack_suite.PRESETS[name].attacks,
        dataclasses.replace(attack_suite.PRESETS[name].config,
                            num_targets=2, square_queries=300),
        per_example=True) for name in ("aa_standard", "aa_reference")}
    survives = {name: np.logical_and.reduce([r["natural"],
                                             *r["robust"].values()])
                for name, r in reports.items()}
    # A real comparison: both leave some examples and fool others, and
    # the reference's leaves more.
    for name, left in survives.items():
      self.assertBetween(left.mean(), 0.1, reports[name]["natural_accuracy"]
                         - 0.2, msg=name)
    self.assertGreater(survives["aa_reference"].sum(),
                       survives["aa_standard"].sum())
    self.assertFalse(np.any(survives["aa_standard"]
                            & ~survives["aa_reference"]))

  def test_sequence_is_the_per_example_and_of_its_attacks(self):
    # One evaluator both ways: the same compiled attacks (evaluate_sequence
    # and evaluate, its wrappers, are compared in the tests below).
    evaluator = evaluation.Evaluator(self.model_fn, EPS, STANDARD, SMALL,
                                     sequential=True)
    seq = evaluator(self.ds, per_example=True)
    alone = evaluator(self.ds, per_example=True, sequential=False)
    self.assertNotIn("sequential", alone)
    both = np.logical_and.reduce([alone["natural"],
                                  *alone["robust"].values()])
    final = np.logical_and.reduce([seq["natural"], *seq["robust"].values()])
    # Each example draws what it draws alone, so the outcome is the same.
    self.assertAllEqual(final, both)
    self.assertAllClose(seq["worst_case_accuracy"], both.mean())
    self.assertAllClose(seq["worst_case_accuracy"],
                        alone["worst_case_accuracy"])
    # Never above any single attack's accuracy, and falling along the way.
    for name in STANDARD:
      self.assertLessEqual(seq["worst_case_accuracy"],
                           alone["robust_accuracy"][name])
    after = [seq["robust_accuracy"][n] for n in STANDARD]
    self.assertEqual(after, sorted(after, reverse=True))
    self.assertEqual(after[-1], seq["worst_case_accuracy"])
    self.assertLess(seq["worst_case_accuracy"], seq["natural_accuracy"])
    # FAB-T reports the median smallest perturbation over what it attacked.
    stats = seq["minimum_norm"]["fab_t"]
    self.assertEqual(stats["num_examples"], seq["examples_attacked"]["fab_t"])
    self.assertGreater(stats["median_norm"], EPS)  # all were robust at EPS

  def test_random_draws_follow_the_example_not_the_batch(self):
    # "coin" fools an example or not by its random draw alone: the sequence
    # equals the attack alone only if each example draws what it draws in
    # the whole batch, though fgsm leaves a smaller batch before it.
    def coin(config, model_fn, x, y, eps, seed):
      del config, model_fn, eps
      u = noise.uniform(tf.shape(y), seed, 0.0, 1.0, tf.float32)
      return tf.where(u[:, None, None, None] < 0.5, 1.0 - x, x)
    attack_catalogue.register("coin", evaluate=coin)  # for this test only
    self.addCleanup(registry.ATTACKS.remove, "coin")
    seq = attack_suite.evaluate_sequence(self.model_fn, self.ds, EPS,
                                         ("fgsm", "coin"), SMALL,
                                         per_example=True)
    alone = attack_suite.evaluate(self.model_fn, self.ds, EPS,
                                  ("fgsm", "coin"), SMALL, per_example=True)
    self.assertLess(seq["examples_attacked"]["coin"],
                    seq["examples_attacked"]["fgsm"])
    both = alone["natural"] & alone["robust"]["fgsm"] & alone["robust"]["coin"]
    self.assertAllEqual(seq["natural"] & seq["robust"]["fgsm"]
                        & seq["robust"]["coin"], both)
    # The coin did something: it fooled about half of what it attacked.
    fooled = seq["robust"]["fgsm"] & ~seq["robust"]["coin"]
    self.assertBetween(fooled.sum() / seq["examples_attacked"]["coin"],
                       0.2, 0.8)

  def test_only_still_robust_examples_are_attacked(self):
    names = ("fgsm", "apgd_ce", "apgd_t")
    # The model calls per attacked example, from runs of each attack alone
    # on every example (an attack's cost per example is fixed).
    cost = {}
    for name in names:
      report, calls = self._counted(attack_suite.evaluate, self.model_fn,
                                    self.ds, EPS, [name], SMALL)
      cost[name] = (calls - self.n) / self.n
      self.assertEqual(cost[name], int(cost[name]))
    self.assertEqual(cost["fgsm"], 2)          # one step, one check
    self.assertEqual(cost["apgd_ce"], 10 + 2)  # start, 10 steps, check
    seq, calls = self._counted(attack_suite.evaluate_sequence, self.model_fn,
                               self.ds, EPS, names, SMALL, per_example=True)
    still = seq["natural"].copy()
    for name in names:
      self.assertEqual(seq["examples_attacked"][name], still.sum())
      still &= seq["robust"][name]
    self.assertEqual(calls, self.n + sum(
        cost[n] * seq["examples_attacked"][n] for n in names))
    self.assertLess(seq["examples_attacked"]["apgd_t"], self.n)

  def test_restarts_in_a_sequence(self):
    config = attack_suite.SuiteConfig(num_steps=3, restarts=3)
    evaluator = evaluation.Evaluator(self.model_fn, EPS, ("fgsm", "pgd"),
                                     config, sequential=True)
    seq = evaluator(self.ds, per_example=True)
    alone = evaluator(self.ds, per_example=True, sequential=False)
    self.assertAllEqual(seq["robust"]["fgsm"] & seq["robust"]["pgd"],
                        alone["natural"] & alone["robust"]["fgsm"]
                        & alone["robust"]["pgd"])
    one = attack_suite.evaluate_sequence(
        self.model_fn, self.ds, EPS, ("fgsm", "pgd"),
        attack_suite.SuiteConfig(num_steps=3))
    self.assertLessEqual(seq["worst_case_accuracy"],
                         one["worst_case_accuracy"])

  def test_no_minimum_found_is_null_not_infinity(self):
    # FAB with no iteration finds nothing: the median is None (JSON has no
    # infinity) and the share found is 0.
    config = attack_suite.SuiteConfig(fab_steps=0)
    seq = attack_suite.evaluate_sequence(self.model_fn, self.ds, EPS,
                                         ("fab_t",), config)
    stats = seq["minimum_norm"]["fab_t"]
    self.assertEqual((stats["median_norm"], stats["found"]), (None, 0.0))
    self.assertEqual(stats["num_examples"], seq["examples_attacked"]["fab_t"])
    self.assertEqual([s["attack"] for s in seq["sequence"]], ["fab_t"])

  def test_nothing_left_is_not_attacked(self):
    # At a huge budget the first attack fools everything: the rest make no
    # model call at all.
    seq, calls = self._counted(attack_suite.evaluate_sequence, self.model_fn,
                               self.ds, 0.6, ("apgd_ce", "fab_t", "square"),
                               SMALL)
    self.assertEqual(seq["worst_case_accuracy"], 0.0)
    self.assertEqual(seq["examples_attacked"]["fab_t"], 0)
    self.assertEqual(seq["examples_attacked"]["square"], 0)
    attacked = seq["examples_attacked"]["apgd_ce"]
    self.assertEqual(calls, self.n + (10 + 2) * attacked)
    self.assertEqual(seq["minimum_norm"]["fab_t"],
                     {"median_norm": None, "num_examples": 0, "found": None})

  def test_bad_sequences(self):
    with self.assertRaisesRegex(ValueError, "twice"):
      attack_suite.evaluate_sequence(self.model_fn, self.ds, EPS,
                                     ("pgd", "pgd"))
    with self.assertRaisesRegex(ValueError, "unknown"):
      attack_suite.evaluate_sequence(self.model_fn, self.ds, EPS, ("fab_x",))

  def test_black_box_check_follows_autoattack(self):
    report = {"epsilon": EPS, "sequential": True, "natural_accuracy": 0.9,
              "robust_accuracy": {"apgd_ce": 0.5, "fab_t": 0.5,
                                  "square": 0.49}}
    checks = dict((n, ok) for n, ok, _ in attack_suite.sanity_checks(
        self.model_fn, self.ds, report, SMALL))
    self.assertFalse(checks["black_box_weaker"])   # 1 point below: flagged
    self.assertNotIn("more_steps", checks)
    report["robust_accuracy"]["square"] = 0.499
    checks = dict((n, ok) for n, ok, _ in attack_suite.sanity_checks(
        self.model_fn, self.ds, report, SMALL))
    self.assertTrue(checks["black_box_weaker"])    # within 0.2%


@pytest.mark.slow
class PresetScriptTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    model, _ = _trained_model()
    cls.model_path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(cls.model_path)

  def _run(self, *args):
    return commands.run(
        [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT)

  def _run_preset(self, preset):
    """Runs `preset` on 32 examples; (the process, the output folder)."""
    folder = tempfile.mkdtemp()
    # A large budget keeps the run short: APGD-CE leaves few examples for
    # the costly attacks, which is the point of the sequence.
    result = self._run(f"--model_path={self.model_path}",
                       "--dataset=mnist_offline", "--num_examples=32",
                       "--epsilon=0.3", f"--preset={preset}",
                       "--nosanity_checks", f"--output_dir={folder}")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    return result, folder

  def test_aa_reference_report_says_what_it_is(self):
    result, folder = self._run_preset("aa_reference")
    with open(os.path.join(folder, "eval.json")) as f:
      saved = json.load(f)
    self.assertEqual(saved["preset"], "aa_reference")
    self.assertEqual(saved["attacks"], list(TA_ORDER))
    self.assertEqual((saved["settings"]["apgd_steps"],
                      saved["settings"]["fab_steps"],
                      saved["settings"]["square_rescale_schedule"]),
                     (TA_APGD_STEPS, TA_FAB_STEPS, TA_SQUARE_RESCALE))
    note = attack_suite.PRESETS["aa_reference"].description
    self.assertEqual(saved["preset_description"], note)
    with open(os.path.join(folder, "eval.md")) as f:
      text = f.read()
    self.assertTrue(text.startswith(f"aa_reference: {note}."), text[:300])
    self.assertIn("| after square | reference AA (not AutoAttack) |", text)
    self.assertIn("reference AA (not AutoAttack) accuracy", result.stdout)
    self.assertNotIn("AutoAttack accuracy", result.stdout)
    self.assertIn("NOT AutoAttack standard", result.stdout)

  def test_aa_standard_report(self):
    result, folder = self._run_preset("aa_standard")
    with open(os.path.join(folder, "eval.json")) as f:
      saved = json.load(f)
    self.assertEqual(saved["preset"], "aa_standard")
    self.assertEqual(saved["attacks"], list(STANDARD))
    self.assertEqual(saved["settings"]["square_queries"], 5000)
    report, = saved["reports"]
    self.assertEqual(list(report["robust_accuracy"]), list(STANDARD))
    attacked = [report["examples_attacked"][n] for n in STANDARD]
    self.assertEqual(attacked, sorted(attacked, reverse=True))
    self.assertLess(attacked[1], attacked[0])
    self.assertIn("AutoAttack accuracy", result.stdout)
    self.assertIn("fab_t", report["minimum_norm"])
    with open(os.path.join(folder, "eval.md")) as f:
      self.assertIn("| after apgd_ce | after apgd_t | after fab_t | "
                    "after square | AutoAttack |", f.read())

  def test_preset_fixes_the_attacks(self):
    for flag in ("--attacks=pgd", "--num_targets=2", "--fab_steps=3"):
      with self.subTest(flag):
        result = self._run("--model_path=/", "--preset=aa_standard", flag)
        self.assertNotEqual(result.returncode, 0)
        lines = result.stderr.strip().splitlines()
        self.assertLen(lines, 1)
        self.assertIn("--preset=aa_standard fixes the attacks and their "
                      f"settings; drop {flag.partition('=')[0]}", lines[0])

  def test_fab_and_target_settings_reach_the_attacks(self):
    folder = tempfile.mkdtemp()
    result = self._run(f"--model_path={self.model_path}",
                       "--dataset=mnist_offline", "--num_examples=16",
                       "--epsilon=0.3", "--attacks=fab_t,fab",
                       "--num_targets=2", "--fab_steps=3",
                       "--fab_restarts=2", "--nosanity_checks",
                       f"--output_dir={folder}")
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    with open(os.path.join(folder, "eval.json")) as f:
      saved = json.load(f)
    settings = saved["settings"]
    self.assertEqual((settings["num_targets"], settings["fab_steps"],
                      settings["fab_restarts"]), (2, 3, 2))
    # The script's numbers are the library's with these settings (seed 0 for
    # a model outside a run folder, the first 16 test images).
    model, test = _trained_model()
    dataset = tf.data.Dataset.from_tensor_slices(
        (test.images[:16] / 255.0, test.labels[:16])).batch(256)
    expected = attack_suite.evaluate(
        lambda x: model(x, training=False), dataset, 0.3, ("fab_t", "fab"),
        config=SuiteConfig(num_targets=2, fab_steps=3, fab_restarts=2))
    report, = saved["reports"]
    for name in ("fab_t", "fab"):
      self.assertEqual(report["robust_accuracy"][name],
                       expected["robust_accuracy"][name])


if __name__ == "__main__":
  tf.test.main()
