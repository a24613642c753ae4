"""The tables of training flags in the docs, made from the configs.

Every training flag is a setting of `part_tf.config` (`all_settings()`),
with its default and help text there. This renders them as Markdown tables
so that the docs never hold a default written by hand: all flags in
docs/training.md, the method's own in docs/method.md.

  python tools/flag_table.py            # rewrites the tables
  python tools/flag_table.py --check    # exit 1 if a page is out of date

`tests/test_doc_examples.py` fails while a page's table differs from
`render()`.
"""

import fractions
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

BEGIN = "<!-- begin flag table: made by python tools/flag_table.py -->"
END = "<!-- end flag table -->"
# The method's flags, in the order docs/method.md lists them.
METHOD_FLAGS = ("method", "epsilon", "epsilon_low", "step_size", "num_steps",
                "burn_in_epochs", "cam", "cam_layer", "mask_rule", "attack",
                "beta", "trades_clean_passes", "epochs", "eval_num_steps")
# Page (from the repository root) -> the flags of its table (None: all,
# sorted by name).
PAGES = {"docs/training.md": None, "docs/method.md": METHOD_FLAGS}


def _builtin(setting) -> bool:
  """Whether a setting belongs to part_tf itself (not to a plug-in that a
  test or a user registered in this process)."""
  return setting.owner.__module__.startswith("part_tf")


def _value(value, kind) -> str:
  """A default as a flag would be written."""
  if value is None or value == ():
    return "none"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    return ",".join(str(v) for v in value)
  if kind == "budget" and isinstance(value, float) and value > 0:
    fraction = fractions.Fraction(value).limit_denominator(1000)
    if fraction.denominator == 255 and abs(float(fraction) - value) < 1e-12:
      return f"{fraction.numerator}/255"
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


def _cell(text: str) -> str:
  return " ".join(text.split()).replace("|", "\\|")


def render(names=None) -> str:
  """The Markdown table of the training flags: name, default, meaning
  (with the choices of an enum).

  Args:
    names: the flags, in order (default: every flag of part_tf, sorted).
  """
  from part_tf import config  # pylint: disable=g-import-not-at-top
  settings = config.all_settings()
  if names is None:
    names = sorted(n for n, s in settings.items() if _builtin(s))
  lines = ["| flag | default | meaning |", "|---|---|---|"]
  for name in names:
    setting = settings[name]
    meaning = setting.help
    choices = setting.choices()
    if choices:
      meaning += " One of: " + ", ".join(f"`{c}`" for c in choices) + "."
    lines.append(f"| `--{name}` | `{_value(setting.flag_default, setting.kind)}` "
                 f"| {_cell(meaning)} |")
  return "\n".join(lines)


def table_in(text: str) -> str:
  """The table between the markers of a page's text.

  Raises:
    ValueError: the page lacks the markers.
  """
  match = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), text, re.S)
  if match is None:
    raise ValueError(f"no '{BEGIN}' ... '{END}' in the page")
  return match.group(1).strip("\n")


def updated(text: str, names=None) -> str:
  """The page's text with its table replaced by `render(names)`."""
  table_in(text)  # the markers are there
  return re.sub(re.escape(BEGIN) + r".*?" + re.escape(END),
                lambda _: f"{BEGIN}\n{render(names)}\n{END}", text,
                flags=re.S)


def main(argv) -> int:
  stale = []
  for page, names in PAGES.items():
    path = os.path.join(ROOT, page)
    with open(path, encoding="utf-8") as f:
      text = f.read()
    new = updated(text, names)
    if new == text:
      continue
    stale.append(page)
    if "--check" not in argv[1:]:
      with open(path, "w", encoding="utf-8") as f:
        f.write(new)
  if stale and "--check" in argv[1:]:
    print(f"out of date: {', '.join(stale)}: run python tools/flag_table.py",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
