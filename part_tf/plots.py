"""Charts of results: robustness against epsilon, training curves, a study.

Each function returns a matplotlib figure; `figure_png` turns it into PNG
bytes. Pure plotting: the numbers come from the reports that the
scripts write (eval.json, log.csv, study.json).
"""

import io

import matplotlib

matplotlib.use("Agg")  # pylint: disable=wrong-import-position
from matplotlib import figure as mfigure  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

def figure_png(fig: mfigure.Figure) -> bytes:
  """The figure as PNG bytes."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
            "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def robustness_figure(reports, attacks, title=None,
                      final=None) -> mfigure.Figure:
  """Accuracy against epsilon per attack and for the worst case; one bar per
  attack when there is a single epsilon.

  Args:
    reports: the `reports` of eval.json (epsilon, natural_accuracy,
      robust_accuracy per attack, worst_case_accuracy), one per epsilon; for
      a sequence (`sequential`), the accuracy after each attack.
    attacks: attack names in the order to show.
    title: a line above the chart.
    final: the name of the last value (default: "AutoAttack" after a
      sequence, else "worst case").
  """
  reports = sorted(reports, key=lambda r: r["epsilon"])
  # After a sequence (an AutoAttack preset) the last value is its accuracy.
  worst = final or ("AutoAttack" if reports and reports[0].get("sequential")
                    else "worst case")
  fig = mfigure.Figure(figsize=(7.0, 4.4), dpi=100)
  ax = fig.add_subplot()
  if len(reports) == 1:
    report = reports[0]
    names = ["natural", *attacks, worst]
    values = [report["natural_accuracy"],
              *(report["robust_accuracy"][a] for a in attacks),
              report["worst_case_accuracy"]]
    colours = ["#7f7f7f", *(_COLOURS[i % len(_COLOURS)]
                            for i in range(len(attacks))), "black"]
    bars = ax.bar(range(len(names)), values, color=colours)
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=8,
                 padding=2)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"accuracy at epsilon {report['epsilon']:.4g}",
                 fontsize=10)
  else:
    eps = [r["epsilon"] for r in reports]
    ax.plot(eps, [r["natural_accuracy"] for r in reports], "--",
            color="#7f7f7f", label="natural")
    for i, attack in enumerate(attacks):
      ax.plot(eps, [r["robust_accuracy"][attack] for r in reports], "o-",
              color=_COLOURS[i % len(_COLOURS)], label=attack, markersize=4)
    ax.plot(eps, [r["worst_case_accuracy"] for r in reports], "s-",
            color="black", linewidth=2.2, label=worst, markersize=5)
    ax.set_xlabel("epsilon (L-inf)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(eps, [f"{e:.4g}" for e in eps])
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "accuracy against epsilon", fontsize=10)
  ax.set_ylim(0, 1.08)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  return fig


def training_curves_figure(logs: dict, burn_in_epochs: int | None = None,
                           title=None) -> mfigure.Figure:
  """Per epoch and method: training loss, natural validation accuracy and
  (where measured) PGD validation accuracy, the end of burn-in marked.

  Args:
    logs: method -> {column of log.csv -> list of values} (`epoch` 0-based).
    burn_in_epochs: where to draw the end of burn-in (None: not drawn).
    title: a line above the charts.
  """
  panels = [("loss", "training loss (on the AEs)"),
            ("val_accuracy", "natural accuracy (held out)")]
  if any(np.isfinite(log.get("val_pgd_accuracy", [np.nan])).sum() > 1
         for log in logs.values()):  # measured on more than the last epoch
    panels.append(("val_pgd_accuracy", "PGD accuracy (held out)"))
  # The legend goes below the charts, in rows of up to 4 methods, so that
  # it hides no curve however many methods there are.
  legend_rows = -(-len(logs) // 4)
  legend_height = 0.25 * legend_rows + 0.15
  fig = mfigure.Figure(figsize=(4.0 * len(panels), 3.6 + legend_height),
                       dpi=100)
  axes = fig.subplots(1, len(panels))
  for ax, (column, label) in zip(np.atleast_1d(axes), panels):
    for i, (method, log) in enumerate(logs.items()):
      epochs = np.asarray(log["epoch"], float) + 1
      values = np.asarray(log.get(column, [np.nan] * len(epochs)), float)
      keep = np.isfinite(values)
      ax.plot(epochs[keep], values[keep], "o-", markersize=3,
              color=_COLOURS[i % len(_COLOURS)], label=method)
    if burn_in_epochs:
      ax.axvline(burn_in_epochs + 0.5, color="#555555", linestyle=":",
                 linewidth=1.2)
      ax.text(burn_in_epochs + 0.6, 0.98, "burn-in ends", fontsize=7,
              color="#555555", va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title(label, fontsize=9)
    ax.grid(alpha=0.3)
  handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=min(4, len(logs)),
             fontsize=8, frameon=False)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, legend_height / (3.6 + legend_height), 1, 1))
  return fig


def study_figure(groups, metrics, title=None) -> mfigure.Figure:
  """Mean (diamond) and standard deviation (bar) over seeds per group, with
  each seed's value as a dot beside it.

  Args:
    groups: list of (label, {metric: per-seed values}).
    metrics: (key, label) of the metrics to show, one chart each.
    title: a line above the charts.
  """
  fig = mfigure.Figure(figsize=(max(4.5, 1.1 * len(groups) + 1.5) *
                                len(metrics), 4.0), dpi=100)
  axes = np.atleast_1d(fig.subplots(1, len(metrics)))
  for ax, (key, label) in zip(axes, metrics):
    for i, (_, values) in enumerate(groups):
      v = np.asarray(values[key], float)
      colour = _COLOURS[i % len(_COLOURS)]
      ax.errorbar(i, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0,
                  fmt="D", color=colour, markersize=7, capsize=6,
                  elinewidth=1.6)
      ax.plot(np.full(len(v), i + 0.22), v, "o", color=colour, alpha=0.6,
              markersize=4)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], rotation=20,
                  ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.3)
    ax.set_title(label, fontsize=9)
    ax.set_ylabel("accuracy")
    everything = np.concatenate([np.asarray(v[key], float)
                                 for _, v in groups])
    low, high = everything.min(), everything.max()
    pad = max(0.01, 0.6 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
    ax.grid(axis="y", alpha=0.3)
  fig.text(0.5, 0.01, "diamond: mean over seeds, bar: ±1 standard deviation, "
           "dots: the seeds", ha="center", fontsize=8, color="#444444")
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  return fig
