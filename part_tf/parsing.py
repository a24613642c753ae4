"""Parsers of setting values, shared by the library and the flags.

`8/255`-style budgets and `--validation_split` values. Importing this module
imports neither TensorFlow nor absl, so the flags parse with it before
TensorFlow loads.
"""


def parse_budget(text) -> float:
  """A non-negative number or fraction `a/b` (`8/255`, `0.03`, `2e-3`).

  Raises:
    ValueError: anything else, or a negative or infinite value.
  """
  if isinstance(text, (int, float)):
    value = float(text)
  else:
    text = str(text).strip()
    try:
      if "/" in text:
        numerator, denominator = text.split("/")
        value = float(numerator) / float(denominator)
      else:
        value = float(text)
    except (ValueError, ZeroDivisionError):
      raise ValueError(f"{text!r} is not a number or a fraction like 8/255"
                       ) from None
  if not value >= 0 or value == float("inf"):
    raise ValueError(f"{text!r} must be a finite number >= 0")
  return value


def parse_validation_split(value):
  """"auto", a count (int >= 0) or a fraction (float in (0, 1)) of
  `--validation_split`; ValueError for anything else."""
  text = str(value).strip().lower()
  if text == "auto":
    return "auto"
  if text.isdigit():
    return int(text)
  fraction = float(text)  # ValueError for other text
  if not 0 < fraction < 1:
    raise ValueError(f"{value!r} is not a fraction in (0, 1)")
  return fraction


def canonical_validation_split(value) -> str:
  """`--validation_split` as config.json records it: 1000 (from Python),
  "1000" and " 1000 " (from the flag) are the same setting."""
  return str(parse_validation_split(value))
