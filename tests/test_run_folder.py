"""The run folder keeps its promises, checked by running the scripts as a user
would: each misuse ends with a non-zero exit, one line on stderr that says
what is wrong (no traceback), and a folder that lost nothing and holds no
half-written file."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import pytest
import tensorflow as tf

from part_tf import run_folder
from tests import commands
from tests.tiny_runs import TINY_TRAIN
from tests.tiny_runs import made_once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")
# A run of seconds: 2 steps per epoch, 1-step PGD.
TINY = [*TINY_TRAIN, "--burn_in_epochs=0"]


def run(script, *args, cwd=ROOT, timeout=300, prefix=()):
  return commands.run([*prefix, sys.executable, script, *args],
                      capture_output=True, text=True, timeout=timeout,
                      cwd=cwd)


def train(model_dir, *args, **kwargs):
  return run(TRAIN, f"--model_dir={model_dir}", *TINY, *args, **kwargs)


def snapshot(folder):
  """{relative path: sha256} of every file but the lock file."""
  files = {}
  for dirpath, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, folder)
      if rel == run_folder.LOCK_FILE:
        continue
      with open(path, "rb") as f:
        files[rel] = hashlib.sha256(f.read()).hexdigest()
  return files


def without_permission_checks():
  """A command prefix under which root obeys file permissions, or None if
  there is none (then root cannot be shown an unwritable folder)."""
  if os.geteuid() != 0:
    return ()
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    return None
  return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


_SHARED = {}


def _train_shared_runs(folder):
  result = train(os.path.join(folder, "finished"), "--epochs=2", "--noexport")
  assert result.returncode == 0, result.stderr
  second = train(os.path.join(folder, "partial"), "--epochs=1", "--noexport")
  assert second.returncode == 0, second.stderr
  for name in ("stdout", "stderr"):
    with open(os.path.join(folder, f"finished.{name}"), "w") as f:
      f.write(getattr(result, name))


def _shared_runs():
  """A finished 2-epoch run and a run stopped after 1 of 2 epochs, trained
  once for all the tests of this module and test_failures.py (in whichever
  test process asks first). Tests change only their copies."""
  if not _SHARED:
    folder = made_once("run_folder_runs", _train_shared_runs)
    output = {}
    for name in ("stdout", "stderr"):
      with open(os.path.join(folder, f"finished.{name}")) as f:
        output[f"finished_{name}"] = f.read()
    _SHARED.update(root=tempfile.mkdtemp(),
                   finished=os.path.join(folder, "finished"),
                   partial=os.path.join(folder, "partial"), **output)
  return _SHARED


class RunFolderTestCase(tf.test.TestCase):
  """Each test works on its own copy of the shared runs."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    for key, value in _shared_runs().items():
      setattr(cls, key, value)

  def copy(self, source, name=None):
    target = os.path.join(tempfile.mkdtemp(dir=self.root), name or "run")
    shutil.copytree(source, target)
    return target

  def assertOneLineError(self, result, *parts):
    self.assertNotEqual(result.returncode, 0, result.stdout[-2000:])
    self.assertNotIn("Traceback", result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr[-3000:])
    self.assertTrue(lines[0].startswith("error: "), lines[0])
    for part in parts:
      self.assertIn(part, lines[0])
    return lines[0]


@pytest.mark.slow
class ResumeTest(RunFolderTestCase):

  def test_a_default_run_prints_its_lines_and_a_clean_stderr(self):
    self.assertEqual(self.finished_stderr, "")
    lines = self.finished_stdout.splitlines()
    self.assertTrue(lines[0].startswith("mnist_offline defaults"), lines[0])
    self.assertTrue(lines[1].startswith("training small_cnn on mnist_offline"))
    self.assertEqual([l.split()[1] for l in lines if l.startswith("epoch ")],
                     ["1/2", "2/2"])
    self.assertTrue(any(l.startswith("test: natural accuracy") for l in lines))

  def test_moved_folder_resumes_under_any_spelling_of_its_path(self):
    moved = self.copy(self.partial, "moved")
    parent, name = os.path.split(moved)
    result = train(name + "/", "--epochs=2", "--noexport", cwd=parent)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("resuming after epoch 1 of 2", result.stdout)
    with open(os.path.join(moved, "metrics.json")) as f:
      self.assertEqual(json.load(f)["resumed_at_epoch"], 1)
    # Absolute and with "." segments: the same finished run, evaluated.
    result = train(os.path.join(parent, ".", name), "--epochs=2",
                   "--noexport")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn("finished its 2 epochs already", result.stdout)
    with open(os.path.join(moved, "config.json")) as f:
      self.assertNotIn("model_dir", json.load(f))

  def test_fewer_epochs_than_finished_is_refused(self):
    folder = self.copy(self.finished)
    before = snapshot(folder)
    result = train(folder, "--epochs=1", "--noexport")
    self.assertOneLineError(result, "finished 2 epochs", "--epochs=1")
    self.assertEqual(snapshot(folder), before)

  def test_missing_config_json_is_refused(self):
    folder = self.copy(self.partial)
    os.remove(os.path.join(folder, "config.json"))
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport", "--seed=9")
    self.assertOneLineError(result, f"{folder}/config.json is missing")
    self.assertEqual(snapshot(folder), before)

  def test_missing_backup_state_is_refused(self):
    folder = self.copy(self.partial)
    os.remove(os.path.join(folder, "backup", "state.json"))
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, f"{folder}/backup/state.json is missing",
                            "epoch-0001.weights.h5")
    self.assertEqual(snapshot(folder), before)

  def test_changed_settings_are_refused(self):
    folder = self.copy(self.partial)
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport", "--epsilon_low=0.05")
    self.assertOneLineError(result, "other settings", "epsilon_low: 0.07 -> "
                            "0.05")
    self.assertEqual(snapshot(folder), before)

  def test_stale_temporaries_of_a_killed_export_are_removed(self):
    folder = self.copy(self.finished)
    os.makedirs(os.path.join(folder, "export", ".tmp-2-abcdef", "variables"))
    with open(os.path.join(folder, ".tmp-123-metrics.json"), "w") as f:
      f.write("{")
    result = train(folder, "--epochs=2")
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(os.listdir(os.path.join(folder, "export")), ["2"])
    self.assertFalse([n for n in os.listdir(folder) if n.startswith(".tmp-")])


@pytest.mark.slow
class LockTest(RunFolderTestCase):

  def test_second_process_on_a_folder_stops_at_once(self):
    folder = os.path.join(tempfile.mkdtemp(dir=self.root), "run")
    first = commands.Popen(
        [sys.executable, TRAIN, f"--model_dir={folder}", *TINY,
         "--max_train_examples=1024", "--epochs=6", "--noexport"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
      log = os.path.join(folder, "log.csv")
      deadline = time.time() + 240
      while not os.path.exists(log) and time.time() < deadline:
        self.assertIsNone(first.poll(), "the first run ended too soon")
        time.sleep(0.1)
      started = time.time()
      second = train(folder, "--epochs=6", "--max_train_examples=1024",
                     "--noexport")
      self.assertIsNone(first.poll(), "the first run ended before the second "
                        "was refused")
      line = self.assertOneLineError(second, f"{folder} is in use by process "
                                     f"{first.pid}", "train.py")
      self.assertLess(time.time() - started, 60, line)
      out, err = first.communicate(timeout=300)
    finally:
      if first.poll() is None:
        first.kill()
    self.assertEqual(first.returncode, 0, err)
    with open(os.path.join(folder, "log.csv")) as f:
      rows = f.read().splitlines()
    self.assertEqual(sum(r.startswith("epoch,") for r in rows), 1)
    self.assertEqual([r.split(",")[0] for r in rows[1:]],
                     [str(e) for e in range(6)])
    self.assertIn("epoch 6/6", out)
    with run_folder.locked(folder):  # released when its holder ended
      pass


@pytest.mark.slow
class BadFolderTest(RunFolderTestCase):

  def test_truncated_backup_weights(self):
    folder = self.copy(self.partial)
    weights = os.path.join(folder, "backup", "epoch-0001.weights.h5")
    with open(weights, "r+b") as f:
      f.truncate(100)
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, weights, "truncated, corrupt")
    self.assertEqual(snapshot(folder), before)

  def test_empty_backup_weights(self):
    folder = self.copy(self.partial)
    weights = os.path.join(folder, "backup", "epoch-0001.weights.h5")
    open(weights, "w").close()
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, weights)
    self.assertEqual(snapshot(folder), before)

  def test_backup_state_naming_a_file_outside_the_folder(self):
    folder = self.copy(self.partial)
    with open(os.path.join(folder, "backup", "state.json"), "w") as f:
      json.dump({"epoch": 1, "weights": "../config.json"}, f)
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, "state.json", "'../config.json' is not "
                            "the name of a weights file")
    self.assertEqual(snapshot(folder), before)

  def test_bad_json_in_config_names_the_file(self):
    folder = self.copy(self.partial)
    with open(os.path.join(folder, "config.json"), "w") as f:
      f.write('{"epochs": 2,')
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, f"corrupt run settings {folder}/"
                            "config.json")
    self.assertEqual(snapshot(folder), before)

  def test_bad_log_row_names_the_file_and_line(self):
    folder = self.copy(self.partial)
    log = os.path.join(folder, "log.csv")
    with open(log) as f:
      text = f.read()
    with open(log, "w") as f:  # what two writers without a lock produced
      f.write(text + text)
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport")
    self.assertOneLineError(result, f"training log {log}, line 3", "'epoch'")
    self.assertEqual(snapshot(folder), before)

  def test_batch_larger_than_the_data_writes_nothing(self):
    fresh = os.path.join(tempfile.mkdtemp(dir=self.root), "run")
    result = train(fresh, "--epochs=2", "--batch_size=512")
    self.assertOneLineError(result, "batch_size 512 exceeds the 256")
    self.assertFalse(os.path.exists(fresh))
    folder = self.copy(self.partial)  # an existing folder keeps its files
    before = snapshot(folder)
    result = train(folder, "--epochs=2", "--noexport", "--batch_size=512")
    self.assertOneLineError(result)
    self.assertEqual(snapshot(folder), before)

  def run_read_only(self, folder, script, *args):
    """Runs `script` with `folder` read-only (for root too, via setpriv)."""
    prefix = without_permission_checks()
    if prefix is None:
      self.skipTest("running as root without setpriv: permissions do not "
                    "apply")
    os.chmod(folder, 0o555)
    try:
      return run(script, *args, prefix=prefix)
    finally:
      os.chmod(folder, 0o755)

  def test_unwritable_model_dir(self):
    parent = tempfile.mkdtemp(dir=self.root)
    result = self.run_read_only(parent, TRAIN, *TINY, "--epochs=1",
                                f"--model_dir={parent}/run")
    self.assertOneLineError(result, "cannot create --model_dir",
                            "Permission denied")
    self.assertEqual(os.listdir(parent), [])

  def test_read_only_run_folder_or_backup_folder(self):
    for sub in ("", "backup"):
      folder = self.copy(self.partial)
      before = snapshot(folder)
      read_only = os.path.join(folder, sub) if sub else folder
      result = self.run_read_only(read_only, TRAIN, *TINY, "--epochs=2",
                                  "--noexport", f"--model_dir={folder}")
      self.assertOneLineError(result, f"cannot write in {read_only}",
                              "Permission denied")
      self.assertEqual(snapshot(folder), before)

  def test_evaluate_checks_its_output_folder_before_the_work(self):
    output = tempfile.mkdtemp(dir=self.root)
    started = time.time()
    result = self.run_read_only(
        output, EVALUATE, f"--model_path={self.finished}",
        f"--output_dir={output}", "--attacks=pgd,apgd_ce,square")
    self.assertLess(time.time() - started, 60)
    self.assertOneLineError(result, f"cannot write in {output}")
    self.assertEqual(os.listdir(output), [])
    self.assertNotIn("eps=", result.stderr)  # no evaluation ran


class BadInputTest(RunFolderTestCase):

  def test_flagfile_that_is_not_utf8(self):
    tmp = tempfile.mkdtemp(dir=self.root)
    flagfile = os.path.join(tmp, "bad.cfg")
    with open(flagfile, "wb") as f:
      f.write(b"--epochs=2\n--dataset=mnist\xff_offline\n")
    model_dir = os.path.join(tmp, "run")
    result = run(TRAIN, f"--flagfile={flagfile}", f"--model_dir={model_dir}")
    self.assertOneLineError(result, f"flagfile {flagfile} is not UTF-8",
                            "0xff")
    self.assertFalse(os.path.exists(model_dir))

  def _tiny_imagenet(self, make_manual_dir, *parts):
    tmp = tempfile.mkdtemp(dir=self.root)
    manual = os.path.join(tmp, "downloads")
    os.mkdir(manual)
    make_manual_dir(manual)
    model_dir = os.path.join(tmp, "run")
    result = run(TRAIN, f"--model_dir={model_dir}", "--dataset=tiny_imagenet",
                 f"--data_dir={os.path.join(tmp, 'tfds')}",
                 f"--manual_dir={manual}", "--epochs=1", "--burn_in_epochs=0")
    self.assertOneLineError(result, *parts)
    self.assertFalse(os.path.exists(model_dir))
    prepared = [d for d, _, names in os.walk(os.path.join(tmp, "tfds"))
                if "dataset_info.json" in names]
    self.assertEqual(prepared, [])
    return manual

  def test_tiny_imagenet_zip_that_is_not_a_zip(self):
    def make(manual):
      with open(os.path.join(manual, "tiny-imagenet-200.zip"), "wb") as f:
        f.write(b"<html>404 Not Found</html>")
    self._tiny_imagenet(make, "tiny-imagenet-200.zip is not a readable zip "
                        "archive")

  def test_tiny_imagenet_zip_bomb(self):
    def make(manual):
      with zipfile.ZipFile(os.path.join(manual, "tiny-imagenet-200.zip"), "w",
                           zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
        archive.writestr("tiny-imagenet-200/words.txt", b"\0" * 65 * 1024**2)
    self._tiny_imagenet(make, "'tiny-imagenet-200/words.txt'", "zip bomb",
                        "nothing extracted")

  def test_tiny_imagenet_zip_with_a_duplicate_member(self):
    def make(manual):
      import warnings  # pylint: disable=g-import-not-at-top
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate
        with zipfile.ZipFile(os.path.join(manual, "tiny-imagenet-200.zip"),
                             "w") as archive:
          archive.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
          archive.writestr("tiny-imagenet-200/wnids.txt", "n99999999\n")
    self._tiny_imagenet(make, "appears twice")

  def test_tiny_imagenet_wnid_that_leaves_the_folder(self):
    def make(manual):
      root = os.path.join(manual, "tiny-imagenet-200")
      os.makedirs(root)
      with open(os.path.join(root, "wnids.txt"), "w") as f:
        f.write("n01443537\n../../outside\n")
      with open(os.path.join(root, "words.txt"), "w") as f:
        f.write("n01443537\tgoldfish\n../../outside\tescape\n")
    self._tiny_imagenet(make, "'../../outside', which is not a wnid")

  def test_evaluate_epsilon_of_one(self):
    result = run(EVALUATE, f"--model_path={self.finished}", "--epsilon=1")
    self.assertOneLineError(result, "--epsilon must be budgets like 8/255, "
                            "below 1")

  def test_evaluate_run_folder_with_corrupt_settings(self):
    folder = self.copy(self.finished)
    with open(os.path.join(folder, "config.json"), "w") as f:
      f.write("{")
    before = snapshot(folder)
    result = run(EVALUATE, f"--model_path={folder}")
    self.assertOneLineError(result, f"corrupt run settings {folder}/"
                            "config.json")
    self.assertEqual(snapshot(folder), before)

  def test_missing_tfds_dataset_offline_fails_fast(self):
    import socket  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    host = sorted(tfds.builder("mnist").url_infos)[0].split("/")[2]
    try:
      socket.create_connection((host, 443), timeout=5).close()
      self.skipTest(f"{host} is reachable: TFDS would download mnist")
    except OSError:
      pass
    tmp = tempfile.mkdtemp(dir=self.root)
    model_dir = os.path.join(tmp, "run")
    started = time.time()
    result = run(TRAIN, f"--model_dir={model_dir}", "--dataset=mnist",
                 f"--data_dir={os.path.join(tmp, 'tfds')}", "--epochs=1",
                 "--burn_in_epochs=0")
    self.assertLess(time.time() - started, 60)
    self.assertOneLineError(result, "Dataset 'mnist'", "cannot be reached",
                            "tfds build mnist")
    self.assertFalse(os.path.exists(model_dir))

  def test_corrupt_keras_file(self):
    tmp = tempfile.mkdtemp(dir=self.root)
    path = os.path.join(tmp, "model.keras")
    with open(os.path.join(self.finished, "classifier.keras"), "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])
    result = run(EVALUATE, f"--model_path={path}", "--dataset=mnist_offline")
    self.assertOneLineError(result, path, "not a valid .keras file")
    self.assertEqual(os.listdir(tmp), ["model.keras"])

  def test_evaluate_model_of_another_image_shape(self):
    result = run(EVALUATE, f"--model_path={self.finished}",
                 "--dataset=cifar10")
    self.assertOneLineError(result, "the model takes images of shape "
                            "(28, 28, 1), but cifar10 images are (32, 32, 3)")
    self.assertFalse(os.path.exists(os.path.join(self.finished, "eval.json")))


class ZipTest(tf.test.TestCase):
  """Limits of the TinyImageNet extraction (no TensorFlow run needed)."""

  def _zip(self, members):
    path = os.path.join(tempfile.mkdtemp(), "tiny-imagenet-200.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
      for name, data in members:
        archive.writestr(name, data)
    return path

  def _refused(self, path, message):
    from part_tf.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
    import pathlib  # pylint: disable=g-import-not-at-top
    target = pathlib.Path(tempfile.mkdtemp())
    with self.assertRaisesRegex(ValueError, message):
      tiny_imagenet.safe_extract(pathlib.Path(path), target)
    self.assertEqual(list(target.iterdir()), [])

  def test_duplicate_members(self):
    import warnings  # pylint: disable=g-import-not-at-top
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # zipfile warns about the duplicate
      path = self._zip([("tiny-imagenet-200/wnids.txt", "n01\n"),
                        ("tiny-imagenet-200/wnids.txt", "n02\n")])
    self._refused(path, "appears twice")

  def test_zip_bomb_member(self):
    path = self._zip([("tiny-imagenet-200/words.txt", b"\0" * (8 * 1024**2))])
    self._refused(path, "a zip bomb")

  def test_total_size_limit(self):
    from part_tf.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
    path = self._zip([(f"tiny-imagenet-200/{i}.txt", os.urandom(4096))
                      for i in range(8)])
    old = tiny_imagenet.MAX_TOTAL_BYTES
    tiny_imagenet.MAX_TOTAL_BYTES = 16384
    try:
      self._refused(path, "would extract to 32768 bytes, more than 16384")
    finally:
      tiny_imagenet.MAX_TOTAL_BYTES = old

  def test_wnid_with_dots(self):
    from part_tf.data import tiny_imagenet  # pylint: disable=g-import-not-at-top
    import pathlib  # pylint: disable=g-import-not-at-top
    root = pathlib.Path(tempfile.mkdtemp())
    (root / "wnids.txt").write_text("n01443537\n../../etc\n")
    with self.assertRaisesRegex(ValueError, "'../../etc', which is not a "
                                "wnid"):
      tiny_imagenet.read_wnids(root)


if __name__ == "__main__":
  tf.test.main()
