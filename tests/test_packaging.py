"""`pip install .`: a wheel built from the checkout, installed offline into
a fresh virtual environment (no dependencies fetched: it sees this
environment's packages), gives the five commands, which work from a folder
outside the checkout."""

import glob
import json
import os
import pytest
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import unittest
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("part-train", "part-evaluate", "part-compare", "part-benchmark",
            "part-visualize")


def _run(args, cwd, timeout=600):
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  return subprocess.run(args, cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)


@pytest.mark.slow
class PackagingTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="part_tf-packaging-")
    # Build from a copy: pip builds in the source folder, and the checkout
    # may be read-only (a Bazel sandbox).
    source = os.path.join(cls.tmp, "source")
    os.makedirs(source)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
      shutil.copy(os.path.join(ROOT, name), source)
    for name in ("part_tf", "flags", "configs"):
      shutil.copytree(os.path.join(ROOT, name), os.path.join(source, name),
                      ignore=shutil.ignore_patterns("__pycache__"))
    wheels = os.path.join(cls.tmp, "wheels")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                  "--no-build-isolation", "--no-index", "-q", "-w", wheels,
                  source], cwd=cls.tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    cls.wheel, = [os.path.join(wheels, f) for f in os.listdir(wheels)]
    # A fresh environment that sees this one's packages (no downloads).
    cls.venv = os.path.join(cls.tmp, "venv")
    made = _run([sys.executable, "-m", "venv", cls.venv], cwd=cls.tmp)
    assert made.returncode == 0, made.stderr[-3000:]
    site = _run([os.path.join(cls.venv, "bin", "python"), "-c",
                 "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=cls.tmp).stdout.strip()
    # Every package folder of this environment (also those its own .pth
    # files add), but not the checkout.
    folders = [p for p in sys.path if os.path.basename(p) in (
        "site-packages", "dist-packages")] or [sysconfig.get_paths()["purelib"]]
    with open(os.path.join(site, "this_environment.pth"), "w") as f:
      f.write("\n".join(folders) + "\n")
    installed = _run([os.path.join(cls.venv, "bin", "python"), "-m", "pip",
                      "install", "--no-deps", "--no-index", "-q", cls.wheel],
                     cwd=cls.tmp)
    assert installed.returncode == 0, installed.stderr[-3000:]
    cls.outside = os.path.join(cls.tmp, "elsewhere")
    os.makedirs(cls.outside)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _bin(self, name):
    return os.path.join(self.venv, "bin", name)

  def test_wheel_contents(self):
    with zipfile.ZipFile(self.wheel) as wheel:
      names = wheel.namelist()
    self.assertIn("part_tf_flags/__init__.py", names)
    self.assertIn("part_tf_flags/train_flags.py", names)
    self.assertIn("part_tf_configs/mnist_offline.cfg", names)
    self.assertIn("part_tf_flags/cli/train.py", names)
    self.assertIn("part_tf/attacks/fab.py", names)
    # Every package of the library (pyproject lists them by hand: a moved
    # one went missing once).
    for init in glob.glob(os.path.join(ROOT, "part_tf", "**", "__init__.py"),
                          recursive=True):
      self.assertIn(os.path.relpath(init, ROOT), names)
    # The Apache-2.0 text (pyproject's license-files) travels with the wheel.
    self.assertTrue([n for n in names
                     if n.endswith(".dist-info/licenses/LICENSE")], names)
    # No package under the generic name `flags`, and no tests.
    self.assertFalse([n for n in names if n.startswith(("flags/", "tests/"))])

  def test_library_comes_from_the_wheel(self):
    result = _run([self._bin("python"), "-c",
                   "import part_tf, part_tf_flags; print(part_tf.__file__); "
                   "print(part_tf_flags.__file__)"], cwd=self.outside)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    for line in result.stdout.split():
      self.assertTrue(line.startswith(self.venv), line)

  def test_every_command_shows_its_flags(self):
    expected = {"part-train": "--method", "part-evaluate": "--preset",
                "part-compare": "--seeds", "part-benchmark": "--family",
                "part-visualize": "--num_images"}
    for command in COMMANDS:
      result = _run([self._bin(command), "--helpfull"], cwd=self.outside)
      # absl exits 1 after printing the help.
      self.assertNotIn("Traceback", result.stderr, command)
      self.assertIn(expected[command], result.stdout, command)
      # The usage is the command's own docstring, naming the command as
      # the user ran it (issue #24: it said `python scripts/train.py`).
      self.assertNotIn("thin wrapper", result.stdout, command)
      usage = result.stdout.split("\nflags:\n")[0]
      self.assertIn(f"  {command} --", usage, command)
      self.assertNotIn("scripts/", usage, command)

  def test_a_tiny_run_from_another_folder(self):
    # The README's flagfile, named as in the checkout, from a folder where
    # no configs/ exists: the installed config is used.
    self.assertFalse(os.path.exists(os.path.join(self.outside, "configs")))
    result = _run([self._bin("part-train"),
                   "--flagfile=configs/mnist_offline.cfg", "--epochs=1",
                   "--burn_in_epochs=0", "--max_train_examples=512",
                   "--model_dir=run"], cwd=self.outside)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(self.outside, "run", "metrics.json")) as f:
      metrics = json.load(f)
    self.assertEqual(metrics["dataset"], "mnist_offline")
    self.assertGreater(metrics["natural_accuracy"], 0.2)
    self.assertTrue(os.path.isdir(os.path.join(self.outside, "run", "export",
                                               "1")))


class UsageTest(unittest.TestCase):
  """The usage text names the command the way the user ran it (fast: the
  builder directly, and the scripts' and modules' `--help`)."""

  def _docs(self):
    """Each command's docstring, read from its source (importing two of
    them would define their flags twice)."""
    import ast  # pylint: disable=g-import-not-at-top
    docs = {}
    for name in ("train", "evaluate", "compare", "visualize", "benchmark"):
      with open(os.path.join(ROOT, "flags", "cli", f"{name}.py"),
                encoding="utf-8") as f:
        docs[name] = ast.get_docstring(ast.parse(f.read()), clean=False)
    return docs

  def test_usage_names_the_installed_command(self):
    from part_tf_flags import usage  # pylint: disable=g-import-not-at-top
    for name, doc in self._docs().items():
      text = usage(doc, argv0=f"/venv/bin/part-{name}", main_module=None)
      self.assertIn(f"  part-{name} --", text, name)
      self.assertNotIn("scripts/", text, name)
    compare = usage(self._docs()["compare"], argv0="/venv/bin/part-compare")
    self.assertIn("Every flag of part-train is accepted", compare)

  def test_usage_names_the_script_as_run(self):
    from part_tf_flags import usage  # pylint: disable=g-import-not-at-top
    doc = self._docs()["train"]
    self.assertIn("  python scripts/train.py --model_dir=",
                  usage(doc, argv0="scripts/train.py", main_module=None))
    self.assertIn("  python /opt/part_tf/scripts/train.py --model_dir=",
                  usage(doc, argv0="/opt/part_tf/scripts/train.py",
                        main_module=None))
    self.assertIn("  python train.py --model_dir=",
                  usage(doc, argv0="train.py", main_module=None))
    self.assertIn("  python -m part_tf_flags.cli.train --model_dir=",
                  usage(doc, argv0="/x/part_tf_flags/cli/train.py",
                        main_module="part_tf_flags.cli.train"))
    # A way it cannot tell (e.g. `bazel run //:train`): the text as written.
    self.assertEqual(usage(doc, argv0="/bazel/runfiles/train",
                           main_module=None), doc)

  def test_help_of_scripts_and_modules(self):
    for name in ("train", "compare"):
      for args, expected in (
          ([os.path.join("scripts", f"{name}.py")],
           f"  python scripts/{name}.py --"),
          (["-m", f"part_tf_flags.cli.{name}"], f"  python -m part_tf_flags.cli.{name} --")):
        result = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120,
                                check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn(expected, result.stdout.split("\nflags:\n")[0])


if __name__ == "__main__":
  unittest.main()
