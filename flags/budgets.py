"""A flag type for budgets and step sizes: `8/255`, `0.03`, `2e-3`."""

from absl import flags

from part_tf.parsing import parse_budget


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
