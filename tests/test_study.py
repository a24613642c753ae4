"""The multi-seed study of `scripts/compare.py`: its statistics against numpy
and scipy, its verdicts, and a killed study that resumes to the same report."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from part_tf import study
from tests import commands
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(ROOT, "scripts", "compare.py")
TINY = [*TINY_TRAIN, "--epochs=2", "--burn_in_epochs=1",
        "--eval_num_steps=2", "--eval_every=1", "--noexport",
        "--image_count=0"]


class StatisticsTest(tf.test.TestCase):

  def test_groups_and_paired_differences_match_numpy_and_scipy(self):
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2, 3]
    values = {m: rng.uniform(0.5, 0.9, size=(len(seeds), 2))
              for m in ("at", "part", "part_t")}
    runs = [study.Run(m, "", s, {"nat": values[m][i, 0],
                                 "pgd": values[m][i, 1]})
            for m in values for i, s in enumerate(seeds)][::-1]  # any order
    summary = study.summarize(runs, ("nat", "pgd"), reference="at")
    self.assertEqual([g["method"] for g in summary["groups"]],
                     ["part_t", "part", "at"])
    for group in summary["groups"]:
      for k, metric in enumerate(("nat", "pgd")):
        column = values[group["method"]][:, k]
        self.assertAllClose(group[metric]["mean"], np.mean(column))
        self.assertAllClose(group[metric]["std"], np.std(column, ddof=1))
    self.assertLen(summary["differences"], 4)
    for d in summary["differences"]:
      k = ("nat", "pgd").index(d["metric"])
      a, b = values[d["method"]][:, k], values["at"][:, k]
      test = stats.ttest_rel(a, b)
      low, high = test.confidence_interval(0.95)
      self.assertAllClose([d["mean"], d["low"], d["high"]],
                          [np.mean(a - b), low, high])
      self.assertEqual(d["verdict"], "significant" if test.pvalue < 0.05
                       else "within noise")

  def test_verdicts(self):
    base = [0.80, 0.81, 0.79]
    better = [study.Run("part", "", s, {"m": v + 0.05})
              for s, v in enumerate(base)]
    same = [study.Run("part_t", "", s, {"m": v + (0.01, -0.01, 0.0)[s]})
            for s, v in enumerate(base)]
    runs = [study.Run("at", "", s, {"m": v}) for s, v in enumerate(base)]
    summary = study.summarize(runs + better + same, ("m",), "at")
    verdicts = {d["method"]: d["verdict"] for d in summary["differences"]}
    self.assertEqual(verdicts, {"part": "significant",
                                "part_t": "within noise"})
    one = study.summarize([runs[0], better[0]], ("m",), "at")
    self.assertEqual(one["differences"][0]["verdict"],
                     "one seed: no interval")

  def test_a_method_without_the_swept_setting_pairs_with_every_value(self):
    runs = [study.Run("at", "", s, {"m": 0.5 + s / 10}) for s in (0, 1)]
    runs += [study.Run("part", v, s, {"m": 0.6 + s / 10 + float(v)})
             for v in ("0.05", "0.07") for s in (0, 1)]
    summary = study.summarize(runs, ("m",), "at")
    self.assertEqual([(d["setting"], round(d["mean"], 6))
                      for d in summary["differences"]],
                     [("0.05", 0.15), ("0.07", 0.17)])


def _read(folder):
  with open(os.path.join(folder, "study.json")) as f:
    report = json.load(f)
  with open(os.path.join(folder, "study.md")) as f:
    return report, f.read()


@pytest.mark.slow
class ResumedStudyTest(tf.test.TestCase):

  def test_killed_study_started_again_gives_the_same_report(self):
    root = tempfile.mkdtemp()
    straight = os.path.join(root, "straight")
    # One seed: two runs straight through, then the kill after the first
    # (a finished run read back, a run done after the restart). The
    # statistics of several seeds are StatisticsTest's.
    command = [sys.executable, COMPARE, *TINY, "--methods=at,part",
               "--seeds=0"]
    result = commands.run([*command, f"--model_dir={straight}"],
                          capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(result.stderr, "")
    self.assertIn("part vs at, natural accuracy: ", result.stdout)

    killed = os.path.join(root, "killed")
    # The study and its train.py children in a session of their own, so
    # that the kill takes them all.
    process = commands.Popen([*command, f"--model_dir={killed}"],
                             cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             start_new_session=True)
    first = os.path.join(killed, "at", "seed0", "metrics.json")
    deadline = time.time() + 300
    while not os.path.exists(first) and time.time() < deadline:
      self.assertIsNone(process.poll(), "the study ended before the kill")
      time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    self.assertFalse(os.path.exists(os.path.join(killed, "study.json")))
    again = commands.run([*command, f"--model_dir={killed}"],
                         capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn("=== at/seed0: finished already", again.stdout)
    (report_a, text_a), (report_b, text_b) = _read(straight), _read(killed)
    self.assertEqual(report_a, report_b)
    self.assertEqual(text_a, text_b)
    self.assertLen(report_a["runs"], 2)
    # The charts of the study.
    for name in ("study.png", "comparison.png"):
      with open(os.path.join(killed, name), "rb") as f:
        chart = tf.io.decode_png(f.read(), channels=3).numpy()
      self.assertGreater(chart.shape[1], 600)
      self.assertGreater(chart.std(), 20.0)
      self.assertGreater(np.mean(chart < 200), 0.01)


@pytest.mark.slow
class VariantStudyTest(tf.test.TestCase):
  """--methods entries that add regularisers (METHOD+NAME[=WEIGHT])."""

  def test_a_regulariser_variant_is_a_method_of_the_study(self):
    root = tempfile.mkdtemp()
    command = [sys.executable, COMPARE, *TINY,
               "--methods=at,at+center_loss=0.01", "--seeds=0",
               f"--model_dir={root}"]
    result = commands.run(command, capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("at+center_loss=0.01 vs at, natural accuracy: ",
                  result.stdout)
    with open(os.path.join(root, "at+center_loss=0.01", "seed0",
                           "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["method"], config["center_loss_weight"]),
                     ("at", 0.01))
    with open(os.path.join(root, "at", "seed0", "config.json")) as f:
      self.assertEqual(json.load(f)["center_loss_weight"], 0.0)
    again = commands.run(command, capture_output=True, text=True,
                         timeout=900, cwd=ROOT)
    self.assertIn("=== at+center_loss=0.01/seed0: finished already",
                  again.stdout)

  def test_bad_entries_are_one_line_errors(self):
    for entry, message in (
        ("at+dropout", "unknown regulariser 'dropout'"),
        ("at+feature_alignment", "feature_alignment has no paper default"),
        ("at+consistency=-1", "must be > 0"),
        ("fgsm+consistency", "unknown method 'fgsm'")):
      result = commands.run(
          [sys.executable, COMPARE, f"--methods=at,{entry}",
           f"--model_dir={tempfile.mkdtemp()}"],
          capture_output=True, text=True, timeout=120, cwd=ROOT)
      self.assertNotEqual(result.returncode, 0)
      self.assertIn(message, result.stderr)
      self.assertLen(result.stderr.strip().splitlines(), 1, result.stderr)


if __name__ == "__main__":
  tf.test.main()
