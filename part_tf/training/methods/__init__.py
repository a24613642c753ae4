"""Training methods: a base method (how it crafts AEs and what it trains on)
and whether PART's pixel-reweighted budget replaces the uniform one.

| method   | base | budget after burn-in |
|---|---|---|
| at       | AT (Madry et al.): CE on AEs that maximise CE          | uniform |
| part     | AT                                                      | CAM     |
| trades   | TRADES: CE(x) + beta KL(p(x) || p(x_adv)), AEs max KL   | uniform |
| part_t   | TRADES                                                  | CAM     |
| mart     | MART: boosted CE(x_adv) + beta (1 - p_y(x)) KL, AEs max CE | uniform |
| part_m   | MART                                                    | CAM     |
| act      | ACT: a robust and a natural model distil each other (`act.py`) | uniform |
| part_act | ACT                                                     | CAM     |

Formulas follow the TRADES, MART and ACT reference code. Each base method is
a file of this package, registered here by name. Every loss reads the
training-mode outputs it needs from a `Forward` (`../forward.py`) and returns
per-example values.
"""

import dataclasses

from part_tf.training.methods import act
from part_tf.training.methods import at
from part_tf.training.methods import mart
from part_tf.training.methods import trades
from part_tf.training.methods.at import at_loss
from part_tf.training.methods.base import BaseMethod
from part_tf.training.methods.base import MethodParams
from part_tf.training.methods.mart import mart_loss
from part_tf.training.methods.trades import trades_loss

BASE_METHODS = {
    "at": at.METHOD,
    "trades": trades.METHOD,
    "mart": mart.METHOD,
    "act": act.METHOD,
}


@dataclasses.dataclass(frozen=True)
class Method:
  """A `--method`: a base method, and whether PART's CAM budget replaces the
  uniform one after burn-in."""
  base: str
  reweighted: bool

  @property
  def concurrent(self) -> bool:
    """Whether a natural model trains beside the robust one (ACT)."""
    return BASE_METHODS[self.base].natural_loss is not None


METHODS = {
    "at": Method(base="at", reweighted=False),
    "part": Method(base="at", reweighted=True),
    "trades": Method(base="trades", reweighted=False),
    "part_t": Method(base="trades", reweighted=True),
    "mart": Method(base="mart", reweighted=False),
    "part_m": Method(base="mart", reweighted=True),
    "act": Method(base="act", reweighted=False),
    "part_act": Method(base="act", reweighted=True),
}
METHOD_NAMES = tuple(METHODS)
REWEIGHTED_METHODS = tuple(n for n, m in METHODS.items() if m.reweighted)
ATTACKS = ("pgd", "mma")
