"""Each script's `--help` lists all of its flags, and path flags refuse URLs
(gs://, ram://, ...) with a one-line error that writes nothing."""

import os
import re
import sys
import tempfile

from absl.testing import parameterized
import tensorflow as tf
from tests import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train", "evaluate", "compare", "benchmark", "visualize")


def _script(name):
  return os.path.join(ROOT, "scripts", f"{name}.py")


def _run(name, *args, cwd=None):
  return commands.run([sys.executable, _script(name), *args], cwd=cwd,
                      capture_output=True, text=True, timeout=300,
                      check=False)


def _listed(text):
  """Flag names a help text lists (`  --name:` or `  --[no]name:`)."""
  return set(re.findall(r"^  --(?:\[no\])?([a-z0-9_]+):", text, re.M))


def _sections(text):
  """{module: set of flag names} of a `--helpfull` text."""
  sections, current = {}, None
  for line in text.splitlines():
    if line and not line.startswith(" ") and line.endswith(":"):
      current = sections.setdefault(line[:-1], set())
    elif current is not None:
      current |= _listed(line + "\n")
  return sections


class HelpTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*SCRIPTS)
  def test_help_lists_every_flag_of_the_script(self, name):
    brief = _run(name, "--help")
    full = _run(name, "--helpfull")
    self.assertEqual(brief.returncode, 0, brief.stderr)
    self.assertEqual(full.returncode, 0, full.stderr)
    # The script's own flags: those --helpfull lists under our modules.
    own = set()
    for module, names in _sections(full.stdout).items():
      if "part_tf" in module or module.endswith(f"{name}.py"):
        own |= names
    self.assertGreater(len(own), 8)
    listed = _listed(brief.stdout)
    self.assertContainsSubset(own, listed)
    # ... and not absl's or TensorFlow's many others.
    self.assertNotIn("logtostderr", listed)
    self.assertIn("--helpfull", brief.stdout)

  def test_help_shows_the_dataset_defaults(self):
    # The default line of --model's entry (its help may wrap).
    model_default = r"\n  --model: .*\n(?:    .*\n)*?    \(default: '{}'\)\n"
    help_text = _run("train", "--dataset=cifar10", "--help").stdout
    self.assertRegex(help_text, model_default.format("resnet18"))
    help_text = _run("train", "--help").stdout  # mnist_offline's
    self.assertRegex(help_text, model_default.format("small_cnn"))
    self.assertIn("--validation_split", help_text)


class UrlPathsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ("train", "--model_dir", "gs://bucket/run", []),
      ("train", "--data_dir", "ram://data", ["--model_dir=run"]),
      ("train", "--manual_dir", "s3://b/m", ["--model_dir=run"]),
      ("compare", "--model_dir", "gs://bucket/study", []),
      ("evaluate", "--model_path", "gs://bucket/run", []),
      ("evaluate", "--output_dir", "ram://out", ["--model_path=."]),
      ("visualize", "--output", "gs://b/p.png", ["--model_path=."]),
      ("benchmark", "--stream_data_dir", "gs://b/d", []))
  def test_url_paths_are_refused_and_nothing_is_written(self, script, flag,
                                                        url, others):
    cwd = tempfile.mkdtemp()
    result = _run(script, f"{flag}={url}", *others, cwd=cwd)
    self.assertEqual(result.returncode, 1, result.stderr)
    lines = result.stderr.strip().splitlines()
    self.assertLen(lines, 1, result.stderr)
    self.assertIn(f"{flag} is a URL: part_tf reads and writes local paths "
                  "only", lines[0])
    self.assertEqual(os.listdir(cwd), [])  # no local folder named "gs:"

  def test_the_library_refuses_a_url_run_folder_too(self):
    from part_tf import experiment  # pylint: disable=g-import-not-at-top
    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp())
    self.addCleanup(os.chdir, cwd)
    with self.assertRaisesRegex(ValueError, "model_dir gs://b/r is a URL"):
      experiment.train(experiment.TrainConfig.from_flat(
          {"model_dir": "gs://b/r"}))
    from part_tf import export  # pylint: disable=g-import-not-at-top
    from part_tf.models import small_cnn  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(ValueError, "gs://b/e is a URL"):
      export.export_classifier(small_cnn((8, 8, 1), 3), "gs://b/e")
    self.assertEqual(os.listdir("."), [])


if __name__ == "__main__":
  tf.test.main()
