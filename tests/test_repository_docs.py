"""The repository is self-contained and its documents agree with the code.

- README.md and every page of docs/ link only to files inside the
  repository, and every link, anchor and backticked repository path in them
  exists; the README links to every page.
- LICENSE is the Apache License 2.0, which pyproject.toml declares.
- CITATION.cff (CFF 1.2.0) cites the PART paper and carries the package's
  version.
- docs/method.md states the settings of configs/*.cfg and the defaults of
  the configs (`part_tf.config`, which the flags are made from): change one
  of them and this test fails until the page is updated. Its parity table with the reference run covers the
  settings the reference run is made of, and each row names tests that
  exist.

Under Bazel the runfiles hold only what BUILD declares (not `.ci/` or the
separate packages under `third_party/` and `tools/python`), so there a
referenced path that is missing from them is not checked; run in the
checkout, every path is.
"""

import glob
import math
import os
import re
import tomllib

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ("README.md",) + tuple(sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs",
                                                           "*.md"))))
# The documents that cite the paper.
CITING = ("README.md", "docs/method.md")
UNDER_BAZEL = "TEST_SRCDIR" in os.environ
# The folders of the repository; a backticked path that starts with one of
# them names a file of the repository (`runs/...`, `backup/...` are not).
REPOSITORY_FOLDERS = (".ci", "configs", "docs", "flags", "part_tf", "scripts",
                      "tests", "third_party", "tools")
PAPER_TITLE = ("Improving Accuracy-robustness Trade-off via Pixel Reweighted "
               "Adversarial Training")
PAPER_FAMILY_NAMES = ["Zhang", "Liu", "Zhou", "Zhang", "Liu"]
CONFIGS = ("configs/cifar10_resnet18.cfg", "configs/svhn_resnet18.cfg",
           "configs/tiny_imagenet_resnet18.cfg", "configs/mnist_offline.cfg")


def _read(path):
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    return f.read()


def _without_code_blocks(text):
  """The text with its fenced code blocks blanked (their lines kept)."""
  return re.sub(r"(?ms)^```.*?^```[^\n]*$",
                lambda m: "\n" * m.group(0).count("\n"), text)


# --- Markdown --------------------------------------------------------------

def _slug(heading):
  """GitHub's anchor of a heading: lower case, markup and punctuation
  dropped, each space a hyphen."""
  text = re.sub(r"[`*]", "", heading.strip().lower())
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def _anchors(text):
  seen, anchors = {}, set()
  for heading in re.findall(r"(?m)^#{1,6}\s+(.+?)\s*#*\s*$",
                            _without_code_blocks(text)):
    slug = _slug(heading)
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    anchors.add(slug if count == 0 else f"{slug}-{count}")
  return anchors


def _links(text):
  """Targets of the Markdown links and images outside code blocks."""
  return re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)",
                    _without_code_blocks(text))


def _backticked_paths(text):
  """Inline-code spans outside code blocks that name a repository path."""
  paths = []
  for span in re.findall(r"`([^`\n]+)`", _without_code_blocks(text)):
    span = span.strip()
    if not re.fullmatch(r"[\w.*/-]+", span):
      continue                      # a command, a formula, a flag with value
    first = span.split("/")[0]
    if first not in REPOSITORY_FOLDERS:
      continue
    if any(part.split(".")[0].isupper() for part in span.split("/")):
      continue                      # a placeholder such as configs/NAME.cfg
    paths.append(span)
  return paths


def _tables(text):
  """Markdown tables outside code blocks: lists of rows of cells."""
  tables, current = [], []
  for line in _without_code_blocks(text).split("\n"):
    if line.startswith("|"):
      cells = [c.strip() for c in
               re.split(r"(?<!\\)\|", line.strip().strip("|"))]
      if not all(re.fullmatch(r":?-+:?", c) for c in cells):
        current.append(cells)
    elif current:
      tables.append(current)
      current = []
  if current:
    tables.append(current)
  return tables


# --- flags and configs -----------------------------------------------------

def _flag_module():
  """(defaults of the training flags, the registries' names): what the
  flags are generated from (`part_tf.config`, `part_tf.registry`), read
  without TensorFlow."""
  from part_tf import attack_catalogue  # pylint: disable=g-import-not-at-top
  from part_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from part_tf import registry  # pylint: disable=g-import-not-at-top
  defaults = {}
  for name, setting in config_lib.all_settings().items():
    value = setting.flag_default
    defaults[name] = ([str(v) for v in value] if isinstance(value, tuple)
                      else value)
  constants = {
      "CAM_METHODS": registry.CAM_METHODS.names(),
      "REWEIGHTED_METHODS": tuple(n for n, cls in registry.METHODS.items()
                                  if cls.reweighted),
      "MASK_RULES": registry.MASK_RULES.names(),
      "ATTACKS": attack_catalogue.training_attacks()}
  return defaults, constants


def _config(path):
  """{flag: value} that a flagfile sets, its --flagfile includes expanded
  where they stand (paths relative to the repository root, as absl resolves
  them against the working directory)."""
  values = {}
  for line in _read(path).splitlines():
    line = line.strip()
    if not line.startswith("--"):
      continue
    name, _, value = line[2:].partition("=")
    if name == "flagfile":
      values.update(_config(value))
    else:
      values[name] = value
  return values


def _number(text):
  text = str(text).strip()
  if "/" in text:
    numerator, denominator = text.split("/")
    return float(numerator) / float(denominator)
  return float(text)


def _normalised(value):
  """A flag value or a table cell as a list of numbers or strings, so that
  `8/255` equals 0.0313..., `60, 70` equals `60,70`, and `none` an unset or
  empty value."""
  if value is None or value == "none":
    items = []
  elif isinstance(value, (list, tuple)):
    items = list(value)
  elif isinstance(value, str):
    items = [v for v in value.split(",") if v.strip()]
  else:
    items = [value]
  out = []
  for item in items:
    try:
      out.append(_number(item))
    except ValueError:
      out.append(str(item).strip().lower())
  return out


def _same(a, b):
  a, b = _normalised(a), _normalised(b)
  return len(a) == len(b) and all(
      math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
      if isinstance(x, float) and isinstance(y, float) else x == y
      for x, y in zip(a, b))


def _cell(text):
  return text.strip().strip("`").strip()


def _flag_of(cell):
  match = re.fullmatch(r"`--(\w+)`", cell.strip())
  return match and match.group(1)


# --- CITATION.cff ----------------------------------------------------------

def _scalar(text):
  text = text.strip()
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
    return text[1:-1]
  if re.fullmatch(r"-?\d+", text):
    return int(text)
  return text


def _indent(line):
  return len(line) - len(line.lstrip(" "))


def _content(line):
  return bool(line.strip()) and not line.lstrip().startswith("#")


def _parse_cff(text):
  """The YAML subset CITATION.cff uses (PyYAML is not a dependency of the
  project): nested mappings, lists of mappings or scalars, quoted and plain
  scalars, `>-` folded blocks and comments. Anything else is a ValueError."""
  value, rest = _parse_block(text.split("\n"))
  if any(_content(line) for line in rest):
    raise ValueError(f"could not parse: {rest[:3]}")
  return value


def _parse_block(lines):
  """Parses the block that starts at the first content line, at that line's
  indentation. Returns (value, the lines after the block)."""
  first = next((line for line in lines if _content(line)), None)
  if first is None:
    return None, []
  indent, result = _indent(first), None
  while lines:
    raw = lines[0]
    if not _content(raw):
      lines = lines[1:]
      continue
    depth = _indent(raw)
    if depth < indent:
      break
    if depth > indent:
      raise ValueError(f"unexpected indentation: {raw!r}")
    line = raw.strip()
    if line.startswith("- "):
      if result is None:
        result = []
      if not isinstance(result, list):
        raise ValueError(f"a list item inside a mapping: {raw!r}")
      item = line[2:]
      if re.match(r"[\w-]+:(\s|$)", item):
        # A mapping item: its first key is a line two columns further in.
        value, lines = _parse_block([" " * (depth + 2) + item] + lines[1:])
      else:
        value, lines = _scalar(item), lines[1:]
      result.append(value)
      continue
    key, colon, rest = line.partition(":")
    if not colon or not re.fullmatch(r"[\w-]+", key):
      raise ValueError(f"not a 'key: value' line: {raw!r}")
    if result is None:
      result = {}
    if not isinstance(result, dict):
      raise ValueError(f"a mapping key inside a list: {raw!r}")
    if key in result:
      raise ValueError(f"duplicate key {key!r}")
    rest, lines = rest.strip(), lines[1:]
    if rest in (">-", ">", "|-", "|"):
      block = []
      while lines and (not lines[0].strip() or _indent(lines[0]) > depth):
        block.append(lines[0].strip())
        lines = lines[1:]
      joiner = " " if rest.startswith(">") else "\n"
      result[key] = joiner.join(b for b in block if b)
    elif rest:
      result[key] = _scalar(rest)
    else:
      nested = next((l for l in lines if _content(l)), "")
      if _indent(nested) <= depth:  # (a nested block is indented further)
        raise ValueError(f"{key!r} has no value")
      result[key], lines = _parse_block(lines)
  return result, lines


class RepositoryDocsTest(absltest.TestCase):

  # --- links and paths -----------------------------------------------------

  def _exists(self, path):
    """Asserts that repository path `path` exists (or, under Bazel, is
    outside the runfiles)."""
    full = os.path.join(ROOT, path)
    found = glob.glob(full) if "*" in path else os.path.exists(full)
    if not found and UNDER_BAZEL:
      return
    self.assertTrue(found, f"{path} does not exist in the repository")

  def test_links_stay_in_the_repository_and_exist(self):
    for document in DOCUMENTS:
      text = _read(document)
      folder = os.path.dirname(document)
      links = _links(text)
      self.assertNotEmpty(links, document)
      for target in links:
        with self.subTest(document=document, link=target):
          if re.match(r"[a-z][a-z0-9+.-]*:", target):
            self.assertRegex(target, r"^(https?|mailto):",
                             f"{document}: unexpected scheme")
            continue
          path, _, fragment = target.partition("#")
          self.assertFalse(path.startswith("/"),
                           f"{document}: {target} is an absolute path")
          self.assertNotIn("shared/", path)
          resolved = (os.path.normpath(os.path.join(folder, path)) if path
                      else document)
          self.assertFalse(
              resolved == ".." or resolved.startswith("../"),
              f"{document}: {target} leaves the repository")
          if document == "README.md":
            self.assertNotIn("../", path, "README links must not go up")
          self._exists(resolved)
          if fragment and resolved.endswith(".md") and os.path.exists(
              os.path.join(ROOT, resolved)):
            self.assertIn(fragment, _anchors(_read(resolved)),
                          f"{document}: no heading for #{fragment} in "
                          f"{resolved}")

  def test_no_reference_to_files_outside_the_repository(self):
    for document in DOCUMENTS:
      text = _read(document)
      self.assertNotIn("PART_METHOD.md", text, document)
      self.assertNotIn("../shared", text, document)

  def test_backticked_repository_paths_exist(self):
    for document in DOCUMENTS:
      text = _read(document)
      paths = _backticked_paths(text)
      self.assertNotEmpty(paths, document)
      for path in paths:
        with self.subTest(document=document, path=path):
          self._exists(path)
      # Flagfiles named anywhere, also inside code blocks.
      for path in re.findall(r"\bconfigs/[a-z0-9_]+\.cfg\b", text):
        with self.subTest(document=document, flagfile=path):
          self._exists(path)

  def test_every_docs_page_is_linked_from_the_readme(self):
    self.assertGreater(len(DOCUMENTS), 10, DOCUMENTS)
    linked = {l.partition("#")[0] for l in _links(_read("README.md"))}
    for document in DOCUMENTS[1:]:
      self.assertIn(document, linked, f"README.md does not link {document}")

  def test_method_page_is_linked_from_the_readme(self):
    links = _links(_read("README.md"))
    self.assertIn("docs/method.md", [l.partition("#")[0] for l in links])
    self.assertIn("docs/method.md#small-offline-runs", links)
    self.assertIn("small-offline-runs", _anchors(_read("docs/method.md")))

  # --- license -------------------------------------------------------------

  def test_license_is_apache_2(self):
    text = _read("LICENSE")
    head = [line.strip() for line in text.splitlines() if line.strip()][:3]
    self.assertEqual(head, ["Apache License", "Version 2.0, January 2004",
                            "http://www.apache.org/licenses/"])
    self.assertIn("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND "
                  "DISTRIBUTION", text)
    sections = ["1. Definitions.", "2. Grant of Copyright License.",
                "3. Grant of Patent License.", "4. Redistribution.",
                "5. Submission of Contributions.", "6. Trademarks.",
                "7. Disclaimer of Warranty.", "8. Limitation of Liability.",
                "9. Accepting Warranty or Additional Liability.",
                "END OF TERMS AND CONDITIONS",
                "APPENDIX: How to apply the Apache License to your work."]
    where = [text.find(s) for s in sections]
    self.assertNotIn(-1, where, dict(zip(sections, where)))
    self.assertEqual(where, sorted(where), "sections out of order")

  def test_pyproject_declares_the_license(self):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      project = tomllib.load(f)["project"]
    self.assertEqual(project["license"], "Apache-2.0")
    self.assertIn("LICENSE", project["license-files"])

  # --- CITATION.cff --------------------------------------------------------

  def test_citation_file(self):
    cff = _parse_cff(_read("CITATION.cff"))
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      version = tomllib.load(f)["project"]["version"]
    self.assertEqual(cff["cff-version"], "1.2.0")
    self.assertEqual(str(cff["version"]), version)
    self.assertEqual(cff["license"], "Apache-2.0")
    self.assertRegex(str(cff["date-released"]), r"^\d{4}-\d\d-\d\d$")
    self.assertIn("cite", cff["message"])
    self.assertIn("part_tf", cff["title"])
    self.assertEqual(cff["authors"], [{"name": "The part_tf Authors"}])
    paper = cff["preferred-citation"]
    self.assertEqual(paper["type"], "conference-paper")
    self.assertEqual(paper["title"], PAPER_TITLE)
    self.assertEqual(paper["year"], 2024)
    self.assertIn("ICML", paper["conference"]["name"])
    self.assertIn("International Conference on Machine Learning",
                  paper["collection-title"])
    self.assertEqual([a["family-names"] for a in paper["authors"]],
                     PAPER_FAMILY_NAMES)
    for author in paper["authors"]:
      self.assertTrue(author.get("given-names"), author)

  def test_documents_cite_the_same_paper(self):
    for document in CITING:
      text = " ".join(_read(document).split())
      self.assertIn(PAPER_TITLE, text, document)
      self.assertIn("CITATION.cff", text, document)

  def test_cff_parser(self):
    parsed = _parse_cff('a: 1\nb: "x: y"\nc:\n  - name: "n"\n    k: v\n'
                        "  - s\nd: >-\n  one\n  two\ne:\n  f: 2020-01-02\n")
    self.assertEqual(parsed, {"a": 1, "b": "x: y",
                              "c": [{"name": "n", "k": "v"}, "s"],
                              "d": "one two", "e": {"f": "2020-01-02"}})
    with self.assertRaises(ValueError):
      _parse_cff("a: 1\na: 2\n")

  # --- docs/method.md against the configs and the flags ------------------

  def test_method_settings_table_matches_the_configs(self):
    defaults, _ = _flag_module()
    tables = [t for t in _tables(_read("docs/method.md"))
              if any(len(r) > 2 and _flag_of(r[1]) == "flagfile" for r in t)]
    self.assertLen(tables, 1, "one table with a `--flagfile` row")
    table = tables[0]
    configs = [_cell(c) for c in next(
        r for r in table if _flag_of(r[1]) == "flagfile")[2:]]
    self.assertCountEqual(configs, CONFIGS)
    documented = set()
    for row in table:
      name = _flag_of(row[1]) if len(row) > 1 else None
      if not name or name == "flagfile":
        continue
      documented.add(name)
      self.assertLen(row, 2 + len(configs), row)
      for config, cell in zip(configs, row[2:]):
        if _cell(cell) == "—":
          continue                  # not used there (e.g. momentum of Adam)
        values = _config(config)
        actual = values.get(name, defaults.get(name))
        with self.subTest(config=config, flag=name):
          self.assertIn(name, defaults, f"--{name} is not a training flag")
          self.assertTrue(
              _same(_cell(cell), actual),
              f"docs/method.md says --{name}={_cell(cell)} for {config}, "
              f"the config gives {actual!r}")
    # Every flag a config sets is in the table, and the budgets and schedule
    # always are.
    for config in configs:
      self.assertLessEqual(set(_config(config)), documented, config)
    self.assertLessEqual(
        {"epsilon", "epsilon_low", "step_size", "num_steps", "epochs",
         "burn_in_epochs", "batch_size", "learning_rate", "momentum",
         "weight_decay", "lr_schedule", "lr_decay_epochs"}, documented)

  def test_method_flag_defaults_match_train_flags(self):
    defaults, _ = _flag_module()
    tables = [t for t in _tables(_read("docs/method.md"))
              if t[0][:2] == ["flag", "default"]]
    self.assertLen(tables, 1, "one `| flag | default |` table")
    documented = set()
    for row in tables[0][1:]:
      name = _flag_of(row[0])
      self.assertTrue(name, row)
      documented.add(name)
      with self.subTest(flag=name):
        self.assertIn(name, defaults)
        self.assertTrue(_same(_cell(row[1]), defaults[name]),
                        f"docs/method.md says --{name} defaults to "
                        f"{_cell(row[1])}, part_tf.config to "
                        f"{defaults[name]!r}")
    self.assertLessEqual(
        {"method", "epsilon", "epsilon_low", "step_size", "num_steps",
         "burn_in_epochs", "cam", "cam_layer", "mask_rule", "attack"},
        documented)

  def test_parity_table_names_existing_tests_for_each_setting(self):
    tables = [t for t in _tables(_read("docs/method.md"))
              if t[0][:2] == ["setting", "reference run"]]
    self.assertLen(tables, 1, "one `| setting | reference run |` table")
    header, *rows = tables[0]
    self.assertEqual(header[-2:], ["same?", "tests"])
    self.assertLessEqual(
        {"model", "input scaling", "optimiser", "schedule per epoch",
         "burn-in", "CAM method", "CAM layer", "mask rule", "attack start",
         "loss", "BN mode while crafting", "evaluation attack and step"},
        {row[0] for row in rows})
    for row in rows:
      with self.subTest(setting=row[0]):
        self.assertLen(row, len(header))
        self.assertRegex(row[-2], r"^(same|differs, because \S)")
        tests = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row[-1])
        self.assertNotEmpty(tests, "names no test")
        for path, name in tests:
          source = _read(os.path.join("tests", path))
          self.assertRegex(source, rf"(?m)^  def {name}\(",
                           f"tests/{path} has no {name}")

  def test_method_names_match_the_code(self):
    _, constants = _flag_module()
    tables = _tables(_read("docs/method.md"))

    def first_column(header):
      found = [t for t in tables if t[0][0] == header]
      self.assertLen(found, 1, header)
      return [_cell(r[0]).split()[0].strip("`") for r in found[0][1:]]

    self.assertCountEqual(first_column("`--cam`"), constants["CAM_METHODS"])
    self.assertCountEqual(first_column("PART variant"),
                          constants["REWEIGHTED_METHODS"])
    text = _read("docs/method.md")
    for rule in constants["MASK_RULES"]:
      self.assertIn(f"- `{rule}`", text, f"mask rule {rule} not described")
    for name in constants["ATTACKS"]:
      self.assertIn(f"`{name}`", text)


if __name__ == "__main__":
  absltest.main()
