"""A quiet, readable command line: TensorFlow's C++ log lines are filtered out
of stderr by default, `--verbosity` brings them back, the training prints one
line per epoch, and on a terminal a progress line during long epochs."""

import io
import os
import pytest
import select
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from part_tf import log_filter
from part_tf.training.progress import EpochLog
from part_tf.training.progress import format_logs
from tests import commands
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
TINY = [*TINY_TRAIN, "--epochs=2", "--burn_in_epochs=1"]

# Lines seen on stderr of a training run on a CPU machine (TF 2.21).
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1795559891.672166   19442 port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results.",
    "I0000 00:00:1795559891.672514   19442 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.",
    "I0000 00:00:1795559891.719511   19442 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions.",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1795559892.610392   19442 cuda_platform.cc:52] failed call to "
    "cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/"
    "cudart_stub.cc:32] Could not find cuda drivers on your machine.",
    "E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to "
    "register cuDNN factory: Attempting to register factory for plugin cuDNN "
    "when one has already been registered",
    "W0000 00:00:1758131045.228000 3722035 computation_placer.cc:177] "
    "computation placer already registered.",
]
KEPT = [
    "Traceback (most recent call last):",
    "error: --epsilon must be > 0 and < 1",
    "E0000 00:00:1795559892.610392   19442 bfc_allocator.cc:12] Allocator "
    "ran out of memory trying to allocate 2.0GiB",
    "F0000 00:00:1795559892.610392   19442 check.cc:1] Check failed: x",
    "W1124 22:38:16.900851 140236260436864 callbacks.py:36] a warning from "
    "Python",
    "ValueError: images of shape (8, 10, 10, 3) do not fit",
    "",
]


def run_train(model_dir, *args, fresh=True):
  """train.py in a fresh interpreter (its start-up stderr is the point), or
  with `fresh=False` as a fork of the tests' warm process."""
  run = subprocess.run if fresh else commands.run
  return run([sys.executable, TRAIN, f"--model_dir={model_dir}", *TINY,
              *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


class LogFilterTest(tf.test.TestCase):

  def test_noise_and_what_is_kept(self):
    for line in NOISE:
      self.assertTrue(log_filter.is_noise(line.encode()), line)
    for line in KEPT:
      self.assertFalse(log_filter.is_noise(line.encode()), line)

  def test_filter_process_passes_lines_and_progress_bars_on_time(self):
    # The filter between two pipes: what a script writes to stderr arrives
    # without the noise, and a progress bar redrawn with \r arrives before
    # its line ends.
    code = ("import sys; sys.path.insert(0, %r); from part_tf import "
            "log_filter; log_filter._run_filter(0, 1)" % ROOT)
    process = subprocess.Popen([sys.executable, "-c", code],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
      process.stdin.write(("\n".join(NOISE[:4]) + "\n").encode())
      process.stdin.write(b"\r 10%|#    |")
      process.stdin.flush()
      ready, _, _ = select.select([process.stdout], [], [], 20)
      self.assertTrue(ready, "the progress bar was held back")
      self.assertEqual(os.read(process.stdout.fileno(), 1000),
                       b"\r 10%|#    |")
      process.stdin.write(("\r 20%|##   |\n" + "\n".join(NOISE[4:] + KEPT)
                           + "\nlast words").encode())
      out, _ = process.communicate(timeout=20)
    finally:
      if process.poll() is None:
        process.kill()
    self.assertEqual(out.decode(),
                     "\r 20%|##   |\n" + "\n".join(KEPT) + "\nlast words")


@pytest.mark.slow
class ScriptOutputTest(tf.test.TestCase):

  def test_default_run_is_quiet_and_verbosity_brings_the_rest_back(self):
    root = tempfile.mkdtemp()
    quiet = run_train(os.path.join(root, "quiet"), "--method=at")
    self.assertEqual(quiet.returncode, 0, quiet.stderr)
    self.assertEqual(quiet.stderr, "")  # no C++ or absl INFO lines at all
    lines = quiet.stdout.splitlines()
    # The dataset defaults the flags did not replace, then the settings.
    self.assertEqual(lines[0], "mnist_offline defaults (flags given on the "
                     "command line or in a flagfile win): --model=small_cnn "
                     "--weight_decay=0.0 --lr_schedule=constant")
    self.assertTrue(lines[1].startswith("training small_cnn on mnist_offline "
                                        "with at (epsilon 0.1)"), lines[1])
    self.assertEqual([l.split()[1] for l in lines if l.startswith("epoch ")],
                     ["1/2", "2/2"])
    self.assertTrue(lines[-2].startswith("test: natural accuracy"))
    self.assertTrue(lines[-1].startswith("wrote "))
    self.assertLessEqual(len(lines), 7)
    self.assertNotIn("pixel-reweighted", quiet.stdout)
    # --verbosity=0: absl's INFO lines (the SavedModel writer's among them)
    # come back; an AT run still says nothing about pixel-reweighted budgets.
    # (What follows the start-up: these two need no fresh interpreter.)
    at = run_train(os.path.join(root, "at"), "--method=at", "--verbosity=0",
                   fresh=False)
    self.assertEqual(at.returncode, 0, at.stderr)
    self.assertIn("Assets written to", at.stderr)
    self.assertNotIn("pixel-reweighted budgets", at.stderr)
    part = run_train(os.path.join(root, "part"), "--method=part",
                     "--verbosity=0", "--noexport", fresh=False)
    self.assertEqual(part.returncode, 0, part.stderr)
    self.assertIn("epoch 2: pixel-reweighted budgets on", part.stderr)


class _Terminal(io.StringIO):

  def isatty(self):
    return True


class EpochLogTest(tf.test.TestCase):

  def _fit(self, stream, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))

    class Slow(keras.callbacks.Callback):
      def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.02)

    x = np.zeros((40, 3), np.float32)
    model.fit(x, np.zeros(40), batch_size=10, epochs=2, verbose=0,
              callbacks=[Slow(), EpochLog(stream=stream, **kwargs)])
    return stream.getvalue()

  def test_a_terminal_sees_progress_within_the_epoch(self):
    text = self._fit(_Terminal(), show_after=0.0, redraw_every=0.0)
    self.assertIn("\r  step 1/4  loss ", text)
    self.assertIn(" left\x1b[K", text)
    lines = [l.split("\r")[-1] for l in text.split("\n") if l]
    self.assertEqual([l.split()[:2] for l in lines],
                     [["\x1b[Kepoch", "1/2"], ["\x1b[Kepoch", "2/2"]])

  def test_a_file_gets_one_line_per_epoch(self):
    text = self._fit(io.StringIO(), show_after=0.0, redraw_every=0.0)
    self.assertNotIn("\r", text)
    lines = text.splitlines()
    self.assertLen(lines, 2)
    self.assertRegex(lines[0], r"^epoch 1/2  loss \d\.\d{4}  \(\d+ s\)$")

  def test_the_learning_rate_is_printed_in_significant_digits(self):
    self.assertEqual(
        format_logs({"learning_rate": 1e-5, "loss": 1.0, "val_loss": np.nan}),
        "loss 1.0000  learning_rate 1e-05")

  def test_short_epochs_on_a_terminal_stay_one_line(self):
    text = self._fit(_Terminal(), show_after=60.0)
    self.assertNotIn("\r", text)


if __name__ == "__main__":
  tf.test.main()
