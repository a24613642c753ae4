"""Every failure ends in one line and touches nothing outside the run folder:
links where a run writes, a full disk, a validation split too small to
choose an epoch, Ctrl-C in each command, and the small ones (one line
ending in log.csv, no empty best/, a link loop named as such, an evaluation
that says how many images it had)."""

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import parameterized
import pytest
import tensorflow as tf

from part_tf.training import robust_evaluation
from part_tf import io_utils
from part_tf import run_folder
from part_tf.data import validation
from part_tf.models import build_model
from tests import commands
from tests import test_run_folder
from tests.test_run_folder import RunFolderTestCase
from tests.test_run_folder import snapshot
from tests.test_run_folder import train

ROOT = test_run_folder.ROOT
EVALUATE = test_run_folder.EVALUATE
COMPARE = os.path.join(ROOT, "scripts", "compare.py")


@contextlib.contextmanager
def small_disk(test, megabytes):
  """A tmpfs of `megabytes` MB, mounted for the block (skips the test
  where mounting is not allowed: not root, or no mount permission)."""
  folder = tempfile.mkdtemp(prefix="part_tf_disk_")
  result = commands.run(
      ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", folder],
      capture_output=True, text=True, check=False)
  if result.returncode != 0:
    os.rmdir(folder)
    test.skipTest(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
  try:
    yield folder
  finally:
    commands.run(["umount", "-l", folder], check=False)
    os.rmdir(folder)


@pytest.mark.slow
class LinkTest(RunFolderTestCase):
  """Links planted in a run folder never make a run write outside it."""

  def _victim(self):
    path = os.path.join(tempfile.mkdtemp(dir=self.root), "victim.txt")
    with open(path, "w") as f:
      f.write("precious\n")
    return path

  def _assert_untouched(self, victim):
    with open(victim) as f:
      self.assertEqual(f.read(), "precious\n")

  def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(self):
    folder = self.copy(self.partial)
    victim = self._victim()
    os.remove(os.path.join(folder, run_folder.LOCK_FILE))
    os.symlink(victim, os.path.join(folder, run_folder.LOCK_FILE))
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, f"{folder}/.lock is a symbolic link")
    self._assert_untouched(victim)
    self.assertEqual(snapshot(folder), before)

  def test_a_log_that_is_a_link_is_refused_before_any_write(self):
    folder = self.copy(self.partial)
    victim = self._victim()
    log = os.path.join(folder, run_folder.LOG_FILE)
    os.remove(log)
    os.symlink(victim, log)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, f"{log} is a symbolic link")
    self._assert_untouched(victim)
    self.assertTrue(os.path.islink(log))
    with open(os.path.join(folder, "backup", "state.json")) as f:
      self.assertEqual(json.load(f)["epoch"], 1)  # nothing trained

  def test_every_entry_a_run_writes_is_checked(self):
    for entry in ("config.json", "log.csv", "metrics.json", "backup",
                  "backup/state.json", "best", "export", "tensorboard",
                  "tensorboard/train", "classifier.keras"):
      with self.subTest(entry=entry):
        folder = self.copy(self.finished)
        target = os.path.join(folder, entry)
        if os.path.isdir(target):
          shutil.rmtree(target)
        elif os.path.lexists(target):
          os.remove(target)
        os.symlink(tempfile.mkdtemp(dir=self.root), target)
        with self.assertRaisesRegex(run_folder.RunFolderError,
                                    f"{target} is a symbolic link"):
          with run_folder.locked(folder):
            pass
    with run_folder.locked(self.copy(self.finished)):
      pass  # a folder without links is fine

  def test_writers_never_follow_links(self):
    folder = tempfile.mkdtemp(dir=self.root)
    victim = self._victim()
    # A link planted at the temporary name of an atomic write.
    target = os.path.join(folder, "metrics.json")
    os.symlink(victim, os.path.join(folder, f".tmp-{os.getpid()}-"
                                    "metrics.json"))
    io_utils.atomic_write_json(target, {"a": 1})
    self._assert_untouched(victim)
    with open(target) as f:
      self.assertEqual(json.load(f), {"a": 1})
    # A file appended to in place.
    log = os.path.join(folder, "log.csv")
    os.symlink(victim, log)
    with self.assertRaisesRegex(io_utils.SymlinkError, "symbolic link"):
      io_utils.open_append(log)
    self._assert_untouched(victim)
    # A folder replaced as a whole (an export).
    export = os.path.join(folder, "export")
    os.symlink(tempfile.mkdtemp(dir=self.root), export)
    with self.assertRaises(io_utils.SymlinkError):
      with io_utils.atomic_directory(export):
        pass

  def test_a_model_dir_link_loop_is_named_as_such(self):
    loop = os.path.join(tempfile.mkdtemp(dir=self.root), "loop")
    os.symlink(loop, loop)
    with self.assertRaisesRegex(run_folder.RunFolderError,
                                "is a symbolic link loop"):
      with run_folder.locked(loop):
        pass
    dangling = os.path.join(os.path.dirname(loop), "dangling")
    os.symlink(os.path.join(self.root, "nothing-here"), dangling)
    with self.assertRaisesRegex(run_folder.RunFolderError,
                                "which does not exist"):
      with run_folder.locked(dangling):
        pass
    # A link to a folder is a fine --model_dir.
    link = os.path.join(os.path.dirname(loop), "link")
    os.symlink(self.copy(self.finished), link)
    with run_folder.locked(link):
      pass


@pytest.mark.slow
class DiskFullTest(RunFolderTestCase):
  """A run on a disk that fills up ends in one line, exit 1, no crash, and
  leaves the folder at its last complete backup."""

  def test_the_first_backup_on_a_full_disk(self):
    with small_disk(self, 3) as disk:
      folder = os.path.join(disk, "run")
      result = train(folder, "--epochs=2", "--noexport")
      self.assertEqual(result.returncode, 1, result.stderr[-3000:])
      self.assertEqual(
          result.stderr.strip(),
          f"error: no space left on device while writing {folder}/backup/"
          "epoch-0001.weights.h5; no epoch is backed up yet")
      self.assertEqual(_temporaries(folder), [])
      with open(os.path.join(folder, "backup", "state.json")) as f:
        self.assertEqual(json.load(f), {"epoch": 0, "weights": None})

  def test_a_later_backup_keeps_the_last_complete_one_and_resumes(self):
    with small_disk(self, 7) as disk:
      folder = os.path.join(disk, "run")
      result = train(folder, "--epochs=3", "--noexport")
      self.assertEqual(result.returncode, 1, result.stderr[-3000:])
      line = result.stderr.strip()
      self.assertRegex(line, r"^error: no space left on device while "
                       r"writing \S+/backup/epoch-000(\d)\.weights\.h5; the "
                       r"last complete backup is epoch \d$")
      failed, last = int(line.split("epoch-000")[1][0]), int(line[-1])
      self.assertEqual(failed, last + 1)
      self.assertEqual(_temporaries(folder), [])
      moved = os.path.join(tempfile.mkdtemp(dir=self.root), "run")
      shutil.copytree(folder, moved)
    # On a disk with room, the same command goes on from that backup.
    result = train(moved, "--epochs=3", "--noexport")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn(f"resuming after epoch {last} of 3", result.stdout)
    self.assertEqual(run_folder.logged_epochs(
        os.path.join(moved, "log.csv")), [0, 1, 2])

  def test_library_writes_raise_enospc_naming_the_file(self):
    model = build_model("small_cnn", (28, 28, 1), 10)
    with small_disk(self, 1) as disk:
      target = os.path.join(disk, "big.weights.h5")
      with open(os.path.join(disk, "filler"), "wb") as f:
        with contextlib.suppress(OSError):
          f.write(b"\0" * (1 << 20))
      with self.assertRaises(OSError) as raised:
        io_utils.atomic_save_weights(model, target)
      self.assertEqual(raised.exception.errno, errno.ENOSPC)
      self.assertEqual(raised.exception.filename, target)
      self.assertEqual(sorted(os.listdir(disk)), ["filler"])

  def test_weights_made_in_memory_equal_keras_save_weights(self):
    model = build_model("small_cnn", (28, 28, 1), 10)
    folder = tempfile.mkdtemp(dir=self.root)
    io_utils.atomic_save_weights(model, os.path.join(folder, "a.weights.h5"))
    model.save_weights(os.path.join(folder, "b.weights.h5"))
    other = build_model("small_cnn", (28, 28, 1), 10)
    other.load_weights(os.path.join(folder, "a.weights.h5"))
    for a, b in zip(model.weights, other.weights):
      self.assertAllEqual(a, b)
    self.assertNotAllClose(
        build_model("small_cnn", (28, 28, 1), 10).weights[0], other.weights[0])


def _temporaries(folder):
  return [os.path.join(d, n) for d, _, names in os.walk(folder)
          for n in names if n.startswith((".tmp-", ".old-"))]


class ValidationSizeTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ("auto", 50_000, 10, 1000),     # 2%: at the cap
      ("auto", 4_000, 10, 100),       # 2% is 80: raised to the minimum
      ("auto", 4_000, 200, 200),      # one per class
      ("auto", 999, 10, 0),           # the minimum would take over 10%
      (100, 4_000, 10, 100),
      (0.05, 4_000, 10, 200))
  def test_sizes(self, setting, num_train, classes, expected):
    self.assertEqual(validation.size_for(setting, num_train, True, classes),
                     expected)

  @parameterized.parameters((1, 10), (99, 10), (150, 200), (0.01, 10))
  def test_small_splits_are_refused_unless_allowed(self, setting, classes):
    with self.assertRaisesRegex(ValueError, "too few to choose the most "
                                "robust epoch.*--allow_small_validation"):
      validation.size_for(setting, 4_000, True, classes)
    self.assertLess(validation.size_for(setting, 4_000, True, classes,
                                        allow_small=True), 200)

  def test_a_tie_goes_to_the_later_epoch(self):
    best_dir = tempfile.mkdtemp()
    callback = robust_evaluation.RobustEvaluation(None, 1, 0.1, 0.025,
                                           best_dir=best_dir)
    classifier = build_model("small_cnn", (28, 28, 1), 10)
    callback.set_model(type("Model", (), {
        "classifier": classifier,
        "distribute_strategy": tf.distribute.get_strategy()})())
    callback.set_params({"epochs": 3})
    scores = iter([0.25, 0.5, 0.5])
    callback._evaluator = lambda _: {  # pylint: disable=protected-access
        "robust_accuracy": {"pgd": next(scores)}}
    callback.on_train_begin()
    for epoch in range(3):
      callback.on_epoch_end(epoch, {})
    self.assertEqual(robust_evaluation.read_best(best_dir)["epoch"], 3)

  def test_train_refuses_a_one_image_split(self):
    result = train(os.path.join(tempfile.mkdtemp(), "run"), "--epochs=2",
                   "--eval_every=1", "--validation_split=1")
    self.assertEqual(result.returncode, 1)
    self.assertEqual(
        result.stderr.strip(),
        "error: --validation_split=1 holds out 1 image, too few to choose "
        "the most robust epoch (at least 100: 100 and one per class); hold "
        "out more, use --validation_split=0 to choose no epoch, or pass "
        "--allow_small_validation")


@pytest.mark.slow
class InterruptTest(RunFolderTestCase):
  """Ctrl-C (SIGINT) ends each command with one line and exit status 130."""

  def _start(self, *command):
    return commands.Popen([sys.executable, *command], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)

  def _interrupt_after(self, process, marker, stream="stdout", delay=0.5):
    """Sends SIGINT once `marker` starts a line of the process' output;
    returns (stdout, stderr) at its end."""
    seen = []
    source = getattr(process, stream)
    deadline = time.time() + 240
    for line in iter(source.readline, ""):
      seen.append(line)
      if marker in line or time.time() > deadline:
        break
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if stream == "stdout":
      return "".join(seen) + out, err
    return out, "".join(seen) + err

  def test_train_says_where_the_same_command_resumes(self):
    folder = os.path.join(tempfile.mkdtemp(dir=self.root), "run")
    args = [test_run_folder.TRAIN, f"--model_dir={folder}",
            *test_run_folder.TINY, "--epochs=40", "--noexport",
            "--max_train_examples=1024"]
    process = self._start(*args)
    out, err = self._interrupt_after(process, "epoch 2/40")
    self.assertEqual(process.returncode, 130, err[-3000:])
    done = run_folder.last_backup_epoch(folder)
    self.assertGreaterEqual(done, 2)
    self.assertEqual(err, f"interrupted at epoch {done + 1}; the same "
                     f"command resumes from epoch {done + 1}\n")
    self.assertIn("epoch 2/40", out)
    # The folder is unlocked and consistent: the same command goes on.
    result = train(folder, f"--epochs={done + 1}", "--noexport",
                   "--max_train_examples=1024")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn(f"resuming after epoch {done} of {done + 1}", result.stdout)

  def test_evaluate_writes_nothing_and_says_how_many_images_it_has(self):
    output = os.path.join(tempfile.mkdtemp(dir=self.root), "reports")
    process = self._start(
        EVALUATE, f"--model_path={self.finished}", f"--output_dir={output}",
        "--attacks=pgd", "--num_steps=500", "--num_examples=100000",
        "--batch_size=64", "--nosanity_checks")
    out, err = self._interrupt_after(process, "eps=", stream="stderr",
                                     delay=2)
    self.assertEqual(process.returncode, 130, err[-3000:])
    self.assertEqual(err.strip().splitlines()[-1],
                     "interrupted; nothing written")
    self.assertNotIn("Traceback", err)
    self.assertIn("note: --num_examples=100000, but the mnist_offline test "
                  "split has 1000 images: evaluating all 1000", out)
    self.assertFalse(os.path.exists(output))

  def test_compare_stops_its_run_and_says_so(self):
    study = os.path.join(tempfile.mkdtemp(dir=self.root), "study")
    process = self._start(
        COMPARE, f"--model_dir={study}", *test_run_folder.TINY,
        "--epochs=40", "--noexport", "--max_train_examples=1024",
        "--methods=at,part", "--burn_in_epochs=1")
    out, err = self._interrupt_after(process, "epoch 2/40")
    self.assertEqual(process.returncode, 130, err[-3000:])
    self.assertNotIn("Traceback", err)
    lines = err.strip().splitlines()
    self.assertRegex(lines[0], r"^interrupted at epoch \d+; the same command "
                     r"resumes from epoch \d+$")  # the run's own line
    self.assertEqual(lines[-1], "interrupted while training at/seed0; the "
                     "runs before it are kept and the same command goes on "
                     "from it")
    self.assertLen(lines, 2)
    self.assertIn("=== at/seed0: training", out)
    self.assertGreaterEqual(
        run_folder.last_backup_epoch(os.path.join(study, "at", "seed0")), 2)


class SmallThingsTest(RunFolderTestCase):

  @pytest.mark.slow  # a train.py run
  def test_log_lines_end_in_lf_also_after_a_resume_of_an_old_log(self):
    with open(os.path.join(self.finished, "log.csv"), "rb") as f:
      fresh = f.read()
    self.assertNotIn(b"\r", fresh)
    self.assertEqual(fresh.count(b"\n"), 3)  # header and two epochs
    folder = self.copy(self.partial)
    log = os.path.join(folder, "log.csv")
    with open(log, "rb") as f:
      old = f.read().replace(b"\n", b"\r\n")  # as older versions wrote it
    with open(log, "wb") as f:
      f.write(old)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(log, "rb") as f:
      resumed = f.read()
    self.assertNotIn(b"\r", resumed)
    self.assertEqual(resumed.split(b"\n")[:2],
                     old.replace(b"\r\n", b"\n").split(b"\n")[:2])
    self.assertEqual(run_folder.logged_epochs(log), [0, 1])

  def test_a_run_without_a_validation_split_has_no_best_folder(self):
    self.assertFalse(os.path.exists(os.path.join(self.finished, "best")))


if __name__ == "__main__":
  tf.test.main()
