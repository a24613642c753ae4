"""Every fenced code block of README.md and docs/*.md runs (issue #24).

- Each block names its language. `python` and `bash` blocks are code; `text`,
  `json` and `bibtex` blocks are data (output samples, layouts, citations),
  and each `json` block is checked against what the code writes.
- A code block that cannot run here carries `<!-- not-run: REASON -->` on
  the line before it (it needs a GPU, Docker, Bazel, a model server...).
  Such blocks are few and each says why.
- Python blocks are executed, in order, one namespace per document, in a
  temporary folder, on tiny data: `tfds.load` reads TFDS mock data, and the
  substitutions listed in `SUBSTITUTIONS` shrink epochs, steps and images
  (each must still match the block, or the test fails).
- Every command of a bash block is one of: setup (`python3 -m venv`,
  `. .venv/bin/activate`, `pip install`), the test command (checked against
  `.ci/run` and `pytest.ini`), `python -c` (executed here), or a part_tf
  command (`python scripts/NAME.py` / `part-NAME`): each of those is parsed
  by its command's flags, with its validators and the configs' checks (the
  run folders and models it names are the shared tiny run's, `PATHS`), and
  the first one of each command that can run offline is run with tiny flags
  (`slow`).
- The README's serving request bodies go through the exported signatures
  and give the fields of the documented answer.
- The flag tables of the docs equal their rendering from the configs
  (`tools/flag_table.py`).
"""

import contextlib
import dataclasses
import glob
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from tests import commands
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs",
                                                           "*.md")))
CODE = ("python", "bash")
DATA = ("text", "json", "bibtex")
# At most this many code blocks may be marked not-run.
MAX_NOT_RUN = 4
NOT_RUN = re.compile(r"^<!-- not-run: (.*?) -->$")
COMMANDS = ("train", "evaluate", "compare", "visualize", "benchmark")

# The tiny run the commands and examples use: 256 offline MNIST images (64
# held out to choose the best epoch), 2 epochs of 2 steps, 1-step PGD.
TINY_EPOCHS = 2
TINY_SETTINGS = {
    "dataset": "mnist_offline", "max_train_examples": 256,
    "max_test_examples": 64, "batch_size": 96, "epsilon": 0.1,
    "epsilon_low": 0.07, "step_size": 0.025, "num_steps": 1,
    "eval_num_steps": 1, "eval_subset": 32, "optimizer": "adam",
    "learning_rate": 1e-3, "weight_decay": 0.0, "lr_schedule": "constant",
    "epochs": TINY_EPOCHS, "burn_in_epochs": 1, "eval_every": 1,
    "validation_split": "64", "allow_small_validation": True,
    "image_count": 0, "model": "small_cnn"}

# Text of a block -> what the test runs instead, per document. Each `old`
# must occur in the document's Python blocks.
SUBSTITUTIONS = {
    "README.md": [
        ("epochs=30", "epochs=1"),
        ("burn_in_epochs=5", "burn_in_epochs=0"),
        ("num_steps=10", "num_steps=1"),
        ("x_test[:1000], y_test[:1000]", "x_test[:8], y_test[:8]"),
        ('"runs/quickstart/part/seed0/export/8"', "TINY_EXPORT"),
    ],
    "docs/training.md": [
        ('data.load("mnist_offline")',
         'data.load("mnist_offline", max_train=64, max_test=32)'),
        ("epochs=8", "epochs=1"),
        ("num_steps=10, burn_in_epochs=3", "num_steps=1, burn_in_epochs=0"),
        ('"model_dir": "runs/mnist_part_py"}',
         '"model_dir": "runs/mnist_part_py", **TINY_SETTINGS_PGD20}'),
    ],
    "docs/evaluation.md": [
        ('"runs/mnist_part/classifier.keras"', "TINY_CLASSIFIER"),
        ("max_test=500", "max_test=8"),
        ('attacks=["pgd", "apgd_ce", "square"]',
         'attacks=["pgd", "apgd_ce", "square"], '
         'config=part_tf.SuiteConfig(apgd_steps=5, square_queries=20)'),
    ],
}
# Python blocks that train a whole run or run AutoAttack (seconds to a
# minute each): the `slow` test runs them.
SLOW_BLOCKS = {("docs/training.md", 1)}

# Paths named by the documents' commands -> the shared tiny run's (longest
# first). Any other existing-path argument of evaluate/visualize fails.
PATHS = [
    ("runs/quickstart/part/seed0/export/8", "{run}/export/%d" % TINY_EPOCHS),
    ("runs/cifar10_part/export/80", "{run}/export/%d" % TINY_EPOCHS),
    ("runs/quickstart/part/seed0", "{run}"),
    ("runs/cifar10_part", "{run}"),
    ("runs/mnist_part", "{run}"),
    ("/tmp/qs_part", "{run}"),
    ("their_model.keras", "{run}/classifier.keras"),
    ("my_classifier.keras", "{run}/classifier.keras"),
    ("model.keras", "{run}/classifier.keras"),
]
# What a run of each command adds to be tiny (and offline).
TINY_FLAGS = {
    "train": [*TINY_TRAIN, "--epochs=1", "--burn_in_epochs=0",
              "--image_count=0"],
    "compare": [*TINY_TRAIN, "--epochs=1", "--burn_in_epochs=0",
                "--image_count=0"],
    "evaluate": ["--num_examples=8", "--num_steps=5", "--apgd_steps=5",
                 "--num_targets=2", "--fab_steps=5",
                 "--square_queries=50"],
    "visualize": ["--num_images=2"],
    "benchmark": ["--repeats=1", "--instances=1", "--serving_batch_size=4"],
}
# Flags a tiny run replaces (its value in the document would be large).
TINY_REPLACES = {"--seeds": "--seeds=0", "--num_examples": "--num_examples=8"}


@dataclasses.dataclass
class Block:
  document: str
  line: int
  language: str
  text: str
  not_run: str | None  # the reason, for a block marked not-run

  def __str__(self):
    return f"{self.document}:{self.line} ({self.language})"


def blocks_of(document):
  """The fenced code blocks of a document, in order."""
  with open(os.path.join(ROOT, document), encoding="utf-8") as f:
    lines = f.read().split("\n")
  found, i = [], 0
  while i < len(lines):
    match = re.match(r"^```(\S*)\s*$", lines[i])
    if not match:
      i += 1
      continue
    end = next(j for j in range(i + 1, len(lines)) if lines[j] == "```")
    previous = next((l for l in reversed(lines[:i]) if l.strip()), "")
    marked = NOT_RUN.match(previous.strip())
    found.append(Block(document, i + 1, match.group(1),
                       "\n".join(lines[i + 1:end]) + "\n",
                       marked.group(1).strip() if marked else None))
    i = end + 1
  return found


def all_blocks():
  return [b for d in DOCUMENTS for b in blocks_of(d)]


def python_blocks(document):
  return [b for b in blocks_of(document)
          if b.language == "python" and b.not_run is None]


def commands_of(block):
  """The commands of a bash block: continuation lines joined, comments
  dropped, `&&` chains split."""
  text = block.text.replace("\\\n", " ")
  commands = []
  for line in text.split("\n"):
    words = shlex.split(line, comments=True)
    if not words:
      continue
    current = []
    for word in words:
      if word == "&&":
        commands.append(current)
        current = []
      else:
        current.append(word)
    commands.append(current)
  return commands


def without_environment(words):
  """A command without its leading `NAME=value` assignments."""
  while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
    words = words[1:]
  return words


def kind_of(words):
  """What a command is: setup, pytest, python-c, a part_tf command, or
  None (unknown)."""
  words = without_environment(words)
  if words[:3] == ["python3", "-m", "venv"] or words[:1] == ["."] or (
      words[:2] == ["pip", "install"]):
    return "setup"
  if words[:3] == ["python", "-m", "pytest"]:
    return "pytest"
  if words[:2] == ["python", "-c"] and len(words) == 3:
    return "python-c"
  if script_of(words):
    return "command"
  if words[:1] == ["saved_model_cli"]:
    return "tool"
  return None


def script_of(words):
  """The part_tf command (e.g. "train") a command runs, or None."""
  words = without_environment(words)
  if len(words) >= 2 and words[0] == "python":
    match = re.fullmatch(r"scripts/(\w+)\.py", words[1])
    if match and match.group(1) in COMMANDS:
      return match.group(1)
  if words and words[0].startswith("part-") and words[0][5:] in COMMANDS:
    return words[0][5:]
  return None


def arguments_of(words):
  words = without_environment(words)
  return words[2:] if words[0] == "python" else words[1:]


def with_paths(argument, run):
  """An argument (`--flag=PATH` or `PATH`) with the documents' run paths
  made the tiny run's."""
  name, eq, value = argument.partition("=")
  if name == "--model_dir":
    return argument  # a new run folder, in the working folder
  if not eq:
    name, eq, value = "", "", argument
  value = os.path.expanduser(os.path.expandvars(value))
  for old, new in PATHS:
    if value == old or value.startswith(old + "/"):
      value = new.format(run=run) + value[len(old):]
      break
  return f"{name}={value}" if name else value


def python_c_code(words, run):
  code = without_environment(words)[2]
  for old, new in PATHS:
    code = code.replace(f"'{old}'", repr(new.format(run=run)))
  return code


# --- the shared tiny run ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A finished tiny run folder (with best epoch and both exports)."""
  from part_tf import experiment  # pylint: disable=g-import-not-at-top
  from part_tf.config import TrainConfig  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path_factory.mktemp("doc_examples") / "run")
  experiment.train(TrainConfig.from_flat({**TINY_SETTINGS,
                                          "model_dir": folder}))
  for path in (f"export/{TINY_EPOCHS}", "classifier.keras",
               "best_classifier.keras"):
    assert os.path.exists(os.path.join(folder, path)), path
  assert os.listdir(os.path.join(folder, "export_best"))
  return folder


@contextlib.contextmanager
def working_folder():
  folder = tempfile.mkdtemp(prefix="doc_examples-")
  here = os.getcwd()
  os.chdir(folder)
  try:
    yield folder
  finally:
    os.chdir(here)
    shutil.rmtree(folder, ignore_errors=True)


def substituted(document, text, used):
  for old, new in SUBSTITUTIONS.get(document, []):
    if old in text:
      used.add(old)
      text = text.replace(old, new)
  return text


def run_python_blocks(document, namespace, only=None):
  """Executes a document's Python blocks in order (those whose index is in
  `only`, if given; the others still run when they come before one)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  blocks = python_blocks(document)
  used, ran = set(), []
  last = max(only) if only else len(blocks) - 1
  with tfds.testing.mock_data(num_examples=16):
    for index, block in enumerate(blocks[:last + 1]):
      if (document, index) in SLOW_BLOCKS and (only is None or
                                               index not in only):
        continue
      code = substituted(document, block.text, used)
      try:
        exec(compile(code, str(block), "exec"), namespace)  # pylint: disable=exec-used
      except Exception as e:
        raise AssertionError(f"{block} failed: {type(e).__name__}: {e}"
                             ) from e
      ran.append(index)
  return used, ran


# --- the blocks ------------------------------------------------------------

def test_every_block_is_code_or_data_and_few_are_not_run():
  blocks = all_blocks()
  assert len(blocks) > 20, [str(b) for b in blocks]
  not_run = [b for b in blocks if b.not_run is not None]
  for block in blocks:
    assert block.language in CODE + DATA, (
        f"{block}: name the language of the block (one of "
        f"{', '.join(CODE + DATA)})")
  for block in not_run:
    assert block.language in CODE, f"{block}: only code is marked not-run"
    assert len(block.not_run.split()) >= 3, (
        f"{block}: say why it is not run")
  assert len(not_run) <= MAX_NOT_RUN, [str(b) for b in not_run]
  # Every command of every bash block that runs is one the test knows.
  for block in blocks:
    if block.language == "bash" and block.not_run is None:
      for words in commands_of(block):
        assert kind_of(words), (
            f"{block}: unknown command {' '.join(words)!r}: mark the block "
            "<!-- not-run: REASON --> or teach tests/test_doc_examples.py")
  # Every json block has a check.
  json_blocks = [b for b in blocks if b.language == "json"]
  assert [(b.document) for b in json_blocks] == [
      "README.md", "docs/evaluation.md"], [str(b) for b in json_blocks]
  for block in json_blocks:
    json.loads(block.text)


def test_readme_commands_are_what_ci_and_the_tests_run():
  """The quick-start and test commands are byte-for-byte what a fresh
  machine runs; `.ci/run` runs the test command (pip quietly)."""
  readme = [b.text.strip() for b in blocks_of("README.md")
            if b.language == "bash"]
  setup = ("python3 -m venv .venv && . .venv/bin/activate && pip install -r "
           "requirements.txt && pip install --no-deps --no-build-isolation "
           "-e . && ")
  quick_start = setup + ("python scripts/compare.py --flagfile=configs/"
                         "mnist_offline.cfg --seeds=0,1,2 "
                         "--model_dir=runs/quickstart")
  tests = setup + ("python -m pytest tests -q -n auto --maxprocesses=4 "
                   "--dist loadfile")
  assert quick_start in readme
  assert tests in readme
  assert ('python -m pytest tests -q -n auto --maxprocesses=4 --dist '
          'loadfile -m "not slow"') in readme
  # (Bazel's runfiles hold no .ci/: BUILD declares it nowhere.)
  if "TEST_SRCDIR" not in os.environ:
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
      ci = f.read()
    assert tests.replace("pip install ", "pip install -q ") in ci.split("\n")
  with open(os.path.join(ROOT, "pytest.ini"), encoding="utf-8") as f:
    assert re.search(r"(?m)^\s+slow\b", f.read()), (
        "pytest.ini registers no `slow` marker")
  # The GPU note installs the pinned TensorFlow.
  with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
    pinned = re.search(r"(?m)^tensorflow==(\S+)", f.read()).group(1)
  for document in ("README.md", "docs/installing.md"):
    text = "".join(b.text for b in blocks_of(document))
    assert f"pip install 'tensorflow[and-cuda]=={pinned}'" in text, document


def _flag_table():
  """tools/flag_table.py, the renderer of the docs' flag tables."""
  spec = importlib.util.spec_from_file_location(
      "flag_table", os.path.join(ROOT, "tools", "flag_table.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_flag_tables_are_rendered_from_the_configs():
  flag_table = _flag_table()
  for page, names in flag_table.PAGES.items():
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
      text = f.read()
    assert flag_table.table_in(text) == flag_table.render(names), (
        f"{page}: the flag table is out of date: run python "
        "tools/flag_table.py")


# --- Python blocks ---------------------------------------------------------

def _namespace(tiny_run):
  # (PGD-20 evaluations, as the block's metrics name them.)
  pgd20 = {k: v for k, v in TINY_SETTINGS.items() if k != "eval_num_steps"}
  return {"__name__": "__doc_example__", "TINY_SETTINGS_PGD20": pgd20,
          "TINY_EXPORT": os.path.join(tiny_run, "export", str(TINY_EPOCHS)),
          "TINY_CLASSIFIER": os.path.join(tiny_run, "classifier.keras")}


@pytest.mark.slow
def test_readme_python_blocks(tiny_run):
  with working_folder() as folder:
    namespace = _namespace(tiny_run)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
      used, ran = run_python_blocks("README.md", namespace)
    assert ran == list(range(len(python_blocks("README.md"))))
    assert used == {old for old, _ in SUBSTITUTIONS["README.md"]}
    # The example trained the user's model and saved it; AutoAttack
    # printed its lines and returned images within the budget.
    assert os.path.exists(os.path.join(folder, "my_classifier.keras"))
    x_adv, x = namespace["x_adv"], namespace["x_test"][:8]
    assert x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= 8 / 255 + 1e-6
    assert "robust accuracy:" in output.getvalue()
    assert namespace["adversary"].report["num_examples"] == 8
    # The serving example answered for a black image.
    assert namespace["out"]["classes"].shape == (1,)


def test_docs_python_blocks(tiny_run):
  """The docs' Python blocks that are quick (the slow ones: below)."""
  import part_tf  # pylint: disable=g-import-not-at-top
  for document in DOCUMENTS[1:]:
    if not python_blocks(document):
      continue
    with working_folder():
      # evaluation.md wraps a model of the user's: the tiny run's stands in.
      shutil.copy(os.path.join(tiny_run, "classifier.keras"),
                  "their_model.keras")
      namespace = _namespace(tiny_run)
      try:
        with contextlib.redirect_stdout(io.StringIO()):
          run_python_blocks(document, namespace)
      finally:
        if "logit_pairing" in part_tf.registry.METHODS:
          part_tf.registry.METHODS.remove("logit_pairing")
      if document == "docs/evaluation.md":
        report = namespace["report"]
        assert set(report["robust_accuracy"]) == {"pgd", "apgd_ce", "square"}
        assert report["worst_case_accuracy"] <= min(
            report["robust_accuracy"].values())


@pytest.mark.slow
def test_slow_python_blocks(tiny_run):
  """The Python blocks that train a whole run or run AutoAttack."""
  for document, index in sorted(SLOW_BLOCKS):
    with working_folder():
      namespace = _namespace(tiny_run)
      with contextlib.redirect_stdout(io.StringIO()):
        _, ran = run_python_blocks(document, namespace, only=[index])
      assert index in ran
      if document == "docs/training.md":
        assert 0 <= namespace["metrics"]["natural_accuracy"] <= 1
        assert os.path.exists("runs/mnist_part_py/metrics.json")
      else:
        report = namespace["report"]
        assert report["sequential"]
        assert [s["attack"] for s in report["sequence"]] == [
            "apgd_ce", "apgd_t", "fab_t", "square"]


def test_every_substitution_still_matches_its_document():
  for document, pairs in SUBSTITUTIONS.items():
    text = "".join(b.text for b in python_blocks(document))
    for old, _ in pairs:
      assert old in text, (f"{document}: no {old!r} in its Python blocks: "
                           "the example changed; update SUBSTITUTIONS")


# --- commands --------------------------------------------------------------

DRIVER = textwrap.dedent(r"""
    import importlib, json, os, sys
    name, commands = sys.argv[1], json.loads(sys.stdin.read())
    # What every command imports, once; each command then imports its own
    # module in a fork, with its own argv (as `train.py --plugins` needs).
    import part_tf_flags, part_tf_flags.train_flags, part_tf.components
    from part_tf import log_filter
    log_filter.install = lambda: None   # stderr stays this process's
    results = []
    for argv in commands:
      read, write = os.pipe()
      pid = os.fork()
      if pid == 0:
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        sys.argv = argv
        try:
          cli = importlib.import_module(f"part_tf_flags.cli.{name}")
          cli.main = lambda argv: 0     # parse and check the flags only
          cli.run()
        except SystemExit as e:
          if e.code not in (0, None):
            print(e.code if isinstance(e.code, str) else "", flush=True)
          os._exit(0 if e.code in (0, None) else 1)
        except BaseException:
          import traceback
          traceback.print_exc()
          os._exit(2)
        os._exit(0)
      os.close(write)
      with os.fdopen(read) as f:
        text = f.read()
      _, status = os.waitpid(pid, 0)
      results.append([os.waitstatus_to_exitcode(status), text[-2000:]])
    print(json.dumps(results))
    """)



def documented_commands():
  """(block, words) of every part_tf command in the documents' bash
  blocks that run."""
  return [(b, words) for b in all_blocks()
          if b.language == "bash" and b.not_run is None
          for words in commands_of(b) if kind_of(words) == "command"]


def test_every_command_parses_with_its_flags(tiny_run):
  found = documented_commands()
  assert {script_of(w) for _, w in found} == set(COMMANDS)
  by_script = {}
  for block, words in found:
    argv = [f"scripts/{script_of(words)}.py"] + [
        with_paths(a, tiny_run) for a in arguments_of(words)]
    by_script.setdefault(script_of(words), []).append((block, words, argv))
  # From a folder outside the checkout: the commands name configs/*.cfg,
  # which must be found wherever they are run.
  outside = tempfile.mkdtemp(prefix="doc_examples-")
  for script, entries in by_script.items():
    result = commands.run(
        [sys.executable, "-c", DRIVER, script],
        input=json.dumps([argv for _, _, argv in entries]), cwd=outside,
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().split("\n")[-1])
    for (block, words, _), (status, text) in zip(entries, outcomes):
      assert status == 0, f"{block}: {' '.join(words)}\n{text}"
  shutil.rmtree(outside, ignore_errors=True)


def test_python_c_commands_run(tiny_run):
  found = [(b, w) for b in all_blocks()
           if b.language == "bash" and b.not_run is None
           for w in commands_of(b) if kind_of(w) == "python-c"]
  assert len(found) >= 2
  for block, words in found:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
      exec(python_c_code(words, tiny_run), {"__name__": "__main__"})  # pylint: disable=exec-used
    assert output.getvalue().strip(), f"{block}: printed nothing"


def _tiny_argv(script, words, run):
  """A documented command as a tiny run: paths made the tiny run's, large
  settings replaced, tiny flags added, outputs kept in the working folder."""
  argv = []
  for argument in arguments_of(words):
    argument = with_paths(argument, run)
    name = argument.partition("=")[0]
    if name in TINY_REPLACES:
      argument = TINY_REPLACES[name]
    if name == "--output":
      argument = "--output=out.png"
    if name == "--output_dir":
      argument = "--output_dir=out"
    argv.append(argument)
  names = {a.partition("=")[0] for a in argv}
  argv += [f for f in TINY_FLAGS[script] if f.partition("=")[0] not in names]
  if script == "evaluate" and "--output_dir" not in names:
    argv.append("--output_dir=out")
  return [sys.executable, os.path.join(ROOT, "scripts", f"{script}.py"),
          *argv]


def _runs_offline(script, words):
  """Whether a documented command can run here: no TF_CONFIG job, no
  dataset or flagfile but the offline one (benchmark: its serving section
  alone)."""
  if without_environment(words) != words:
    return False
  if script == "benchmark":
    return "--serving_only" in words
  for argument in words:
    name, _, value = argument.partition("=")
    if name == "--dataset" and value != "mnist_offline":
      return False
    if name == "--flagfile" and value != "configs/mnist_offline.cfg":
      return False
  return True


@pytest.mark.slow
def test_the_first_offline_command_of_each_script_runs(tiny_run):
  chosen = {}
  for block, words in documented_commands():
    script = script_of(words)
    if script not in chosen and _runs_offline(script, words):
      chosen[script] = (block, words)
  assert set(chosen) == set(COMMANDS), chosen
  for script, (block, words) in chosen.items():
    with working_folder() as folder:
      argv = _tiny_argv(script, words, tiny_run)
      result = commands.run(argv, cwd=folder, capture_output=True,
                            text=True, timeout=600, check=False)
      assert result.returncode == 0, (
          f"{block}: {' '.join(argv)}\n{result.stderr[-3000:]}")


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(tiny_run):
  found = [w for b in all_blocks() if b.language == "bash"
           for w in commands_of(b) if w[:1] == ["saved_model_cli"]]
  assert found
  for words in found:
    argv = [with_paths(a, tiny_run) for a in words]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = commands.run([cli, *argv[1:]], capture_output=True,
                          text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("serving_default", "serving_uint8", "class_name",
                 "probabilities"):
      assert name in result.stdout


# --- serving ---------------------------------------------------------------

def _documented_answer():
  block, = [b for b in blocks_of("README.md") if b.language == "json"]
  return json.loads(block.text)


def _served(signature, body):
  """What TF Serving's REST API answers for `body` (row format): the
  signature run on the instances, one object per instance."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec, = signature.structured_input_signature[1].values()
  outputs = signature(images=tf.constant(np.asarray(body["instances"]),
                                         spec.dtype))
  predictions = []
  for i in range(len(body["instances"])):
    row = {}
    for name, value in outputs.items():
      value = value[i].numpy()
      row[name] = (value.decode() if isinstance(value, bytes) else
                   value.tolist())
    predictions.append(row)
  return {"predictions": predictions}


def test_the_documented_requests_give_the_documented_answer(tiny_run):
  """The README's request bodies, made by its own code, go through the
  exported signatures they name; the answer has the documented fields, of
  the documented types."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  bodies_block = next(b for b in python_blocks("README.md")
                      if "signature_name" in b.text)
  loaded = tf.saved_model.load(os.path.join(tiny_run, "export",
                                            str(TINY_EPOCHS)))
  answer = _documented_answer()
  documented = answer["predictions"]
  assert documented
  with working_folder():
    exec(bodies_block.text, {"__name__": "__doc_example__"})  # pylint: disable=exec-used
    names = {}
    for signature in ("serving_default", "serving_uint8"):
      with open(f"{signature}.json", encoding="utf-8") as f:
        body = json.load(f)
      assert body["signature_name"] == signature
      assert len(body["instances"]) == len(documented)
      served = _served(loaded.signatures[body["signature_name"]], body)
      names[signature] = served
      for got, doc in zip(served["predictions"], documented):
        assert set(got) == set(doc)
        for field in doc:
          assert type(got[field]) is type(doc[field]), field
        assert len(got["logits"]) == len(doc["logits"])
    # Both signatures answer alike for the same images.
    for a, b in zip(names["serving_default"]["predictions"],
                    names["serving_uint8"]["predictions"]):
      assert a["classes"] == b["classes"]
      np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-4)
  # The documented answer is self-consistent: softmax of its logits, the
  # class of the largest logit, named as the digit.
  for doc in documented:
    logits = np.asarray(doc["logits"])
    softmax = np.exp(logits - logits.max())
    np.testing.assert_allclose(doc["probabilities"], softmax / softmax.sum(),
                               atol=2e-3)
    assert doc["classes"] == int(np.argmax(logits))
    assert doc["class_name"] == str(doc["classes"])


def test_the_robustbench_sample_has_the_fields_evaluate_writes():
  from part_tf import evaluation_report  # pylint: disable=g-import-not-at-top
  block = next(b for b in blocks_of("docs/evaluation.md")
               if b.language == "json")
  sample = json.loads(block.text)
  report = {"natural_accuracy": 0.98, "worst_case_accuracy": 0.904,
            "epsilon": 0.1, "num_examples": 500,
            "sanity_checks": [{"passed": True}]}
  loaded = dataclasses.make_dataclass(
      "Loaded", ["dataset", "run"])("mnist_offline", {"model": "small_cnn"})
  request = evaluation_report.Request(model_path="runs/mnist_part",
                                      preset="aa_standard")
  written = evaluation_report.robustbench_summary(report, loaded, request)
  assert set(sample) == set(written)
  for field in written:
    if field != "model_path":
      assert sample[field] == written[field], field
