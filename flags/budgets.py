"""A flag type for budgets and step sizes: `8/255`, `0.03`, `2e-3`."""

from absl import flags


def parse_budget(text) -> float:
  """Parses a non-negative number or fraction `a/b`; ValueError otherwise."""
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


class BudgetParser(flags.ArgumentParser):
  """absl parser for `parse_budget` values."""

  def parse(self, argument):
    return parse_budget(argument)

  def flag_type(self):
    return "budget (float or fraction like 8/255)"


def DEFINE_budget(name, default, help_text, flag_values=flags.FLAGS):  # pylint: disable=invalid-name
  """Defines a flag holding a budget as a float; accepts `8/255`."""
  flags.DEFINE(BudgetParser(), name, default, help_text,
               flag_values=flag_values, serializer=flags.ArgumentSerializer())
