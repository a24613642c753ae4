"""Training methods: how AEs are crafted and what the model trains on.

| method   | base | budget after burn-in |
|---|---|---|
| at       | AT (Madry et al.): CE on AEs that maximise CE          | uniform |
| part     | AT                                                      | CAM     |
| trades   | TRADES: CE(x) + beta KL(p(x) || p(x_adv)), AEs max KL   | uniform |
| part_t   | TRADES                                                  | CAM     |
| mart     | MART: boosted CE(x_adv) + beta (1 - p_y(x)) KL, AEs max CE | uniform |
| part_m   | MART                                                    | CAM     |
| act      | ACT: a robust and a natural model distil each other     | uniform |
| part_act | ACT                                                     | CAM     |

Each method is one file of this package, a `Method` registered by name
(`base.py` says how to add one). Formulas follow the TRADES, MART and ACT
reference code.
"""

# In the order the flags list them (registration order).
from part_tf.methods import at  # pylint: disable=g-bad-import-order
from part_tf.methods import trades  # pylint: disable=g-bad-import-order
from part_tf.methods import mart  # pylint: disable=g-bad-import-order
from part_tf.methods import act  # pylint: disable=g-bad-import-order
from part_tf.methods.act import ACT
from part_tf.methods.act import PartACT
from part_tf.methods.at import AT
from part_tf.methods.at import PART
from part_tf.methods.base import Method
from part_tf.methods.base import register
from part_tf.methods.mart import MART
from part_tf.methods.mart import PartM
from part_tf.methods.trades import PartT
from part_tf.methods.trades import TRADES
from part_tf.registry import METHODS


def get(name: str):
  """The method class registered as `name`."""
  return METHODS.get(name)


__all__ = ["ACT", "AT", "MART", "METHODS", "Method", "PART", "PartACT",
           "PartM", "PartT", "TRADES", "get", "register"]
