"""A multi-seed study: is the difference between two methods real or noise?

Pure statistics over per-run numbers (no TensorFlow): `summarize` turns the
runs of a study (method, setting, seed, metrics) into per-group means and
standard deviations over seeds, and paired differences to a reference
method with a 95% t-interval over seeds. Runs are paired by seed and
setting: the same seed gives the same initialisation, data order and split
to both methods, so the paired difference removes that shared noise.
"""

import dataclasses
import math
import os

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished run of a study.

  Attributes:
    method: the method trained.
    setting: the swept setting's value as text ("" without a sweep, or for a
      method the swept setting does not affect).
    seed: its seed.
    metrics: metric name -> value (e.g. natural_accuracy).
  """
  method: str
  setting: str
  seed: int
  metrics: dict


def interval(differences, confidence: float = CONFIDENCE):
  """Mean and t-interval of paired differences: (mean, low, high).

  With one value there is no interval: (mean, nan, nan).
  """
  d = np.asarray(differences, float)
  mean = float(d.mean())
  if len(d) < 2:
    return mean, math.nan, math.nan
  half = (stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1)
          / math.sqrt(len(d)))
  return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
  """'significant' if the interval excludes 0, else 'within noise'."""
  if math.isnan(low):
    return "one seed: no interval"
  return "significant" if low > 0 or high < 0 else "within noise"


def summarize(runs, metrics, reference: str) -> dict:
  """Groups and paired differences of a study.

  Args:
    runs: `Run`s.
    metrics: metric names to summarise.
    reference: the method every other method is compared with.

  Returns:
    {"groups": [{method, setting, seeds, <metric>: {mean, std, values}}],
     "differences": [{method, setting, versus, metric, seeds, mean, low,
     high, verdict}]}: groups in the order of first appearance; differences
    pair each run with the reference's run of the same seed and setting (or
    its only run when the setting does not apply to it).
  """
  groups = {}
  for run in runs:
    groups.setdefault((run.method, run.setting), []).append(run)
  summary = {"groups": [], "differences": []}
  for (method, setting), members in groups.items():
    members = sorted(members, key=lambda r: r.seed)
    group = {"method": method, "setting": setting,
             "seeds": [r.seed for r in members]}
    for metric in metrics:
      values = [float(r.metrics[metric]) for r in members]
      group[metric] = {
          "mean": float(np.mean(values)),
          "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
          "values": values}
    summary["groups"].append(group)
  references = {(r.setting, r.seed): r for r in runs
                if r.method == reference}
  for (method, setting), members in groups.items():
    if method == reference:
      continue
    pairs = []
    for run in sorted(members, key=lambda r: r.seed):
      partner = references.get((setting, run.seed)) or references.get(
          ("", run.seed))
      if partner is not None:
        pairs.append((run, partner))
    if not pairs:
      continue
    for metric in metrics:
      diffs = [float(a.metrics[metric]) - float(b.metrics[metric])
               for a, b in pairs]
      mean, low, high = interval(diffs)
      summary["differences"].append({
          "method": method, "setting": setting, "versus": reference,
          "metric": metric, "seeds": [a.seed for a, _ in pairs],
          "values": diffs, "mean": mean, "low": low, "high": high,
          "verdict": verdict(low, high)})
  return summary


def _signed(value: float) -> str:
  return "nan" if math.isnan(value) else f"{value:+.4f}"


def markdown(summary: dict, metrics, labels: dict, sweep_name: str | None,
             header: str = "") -> str:
  """The report as markdown: a table of groups, one of differences, and a
  verdict line per difference."""
  def group_name(method, setting):
    return method + (f", {sweep_name}={setting}" if setting else "")

  lines = [header] if header else []
  lines += ["| method | " + " | ".join(
      f"{labels[m]} (mean ± sd)" for m in metrics) + " | seeds |",
            "|---" * (len(metrics) + 2) + "|"]
  for g in summary["groups"]:
    cells = [f"{g[m]['mean']:.4f} ± {g[m]['std']:.4f}" for m in metrics]
    lines.append(f"| {group_name(g['method'], g['setting'])} | "
                 + " | ".join(cells) + f" | {len(g['seeds'])} |")
  if summary["differences"]:
    lines += ["", "| difference | metric | mean | 95% interval | verdict |",
              "|---|---|---|---|---|"]
    for d in summary["differences"]:
      lines.append(
          f"| {group_name(d['method'], d['setting'])} − {d['versus']} | "
          f"{labels[d['metric']]} | {_signed(d['mean'])} | "
          f"[{_signed(d['low'])}, {_signed(d['high'])}] | {d['verdict']} |")
    lines.append("")
    for d in summary["differences"]:
      lines.append(
          f"- {group_name(d['method'], d['setting'])} vs {d['versus']}, "
          f"{labels[d['metric']]}: {d['verdict']} "
          f"({_signed(d['mean'])}, 95% interval [{_signed(d['low'])}, "
          f"{_signed(d['high'])}] over {len(d['seeds'])} paired seeds).")
  return "\n".join(lines) + "\n"


def read_log(path: str) -> dict:
  """{column: [value per epoch]} of a run's log.csv (NaN for blanks)."""
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return {key: [float(r[key]) if r[key] not in ("", "nan") else float("nan")
                for r in rows] for key in (rows[0] if rows else {})}


def mean_log(parts) -> dict:
  """The per-epoch mean of several runs' log columns (runs of equal length)."""
  import warnings  # pylint: disable=g-import-not-at-top
  length = min(len(p.get("epoch", [])) for p in parts)
  keys = set.intersection(*(set(p) for p in parts))
  with warnings.catch_warnings():  # epochs without a PGD measurement: NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    return {k: list(np.nanmean([p[k][:length] for p in parts], axis=0))
            if k != "epoch" else parts[0][k][:length] for k in keys}


def write_report(out: str, runs, logs: dict, metric_names, labels: dict,
                 reference: str, sweep_name, header: str, burn_in,
                 facts: dict) -> str:
  """Writes study.json, study.md, comparison.md, study.png and
  comparison.png to `out`; returns study.md's text.

  Args:
    out: the study's folder.
    runs: its `Run`s.
    logs: {label: [each seed's `read_log`]}.
    metric_names, labels: the metrics compared, and their labels.
    reference: the method the differences are taken to.
    sweep_name: the swept setting, or None.
    header: the first line of the report and the charts' title.
    burn_in: the epoch to mark on the curves, or None.
    facts: more of study.json (dataset, methods, seeds, sweep).
  """
  from part_tf import io_utils  # pylint: disable=g-import-not-at-top
  from part_tf import plots  # pylint: disable=g-import-not-at-top
  summary = summarize(runs, metric_names, reference=reference)
  text = markdown(summary, metric_names, labels, sweep_name,
                  header=header + "\n")
  io_utils.atomic_write_json(os.path.join(out, "study.json"), {
      **facts, "runs": [{"method": r.method, "setting": r.setting,
                         "seed": r.seed, **r.metrics} for r in runs],
      **summary})
  io_utils.atomic_write_text(os.path.join(out, "study.md"), text)
  table = text.split("\n\n")[0] if summary["differences"] else text
  io_utils.atomic_write_text(os.path.join(out, "comparison.md"),
                             table.rstrip("\n") + "\n")
  groups = [(g["method"] + (f"\n{sweep_name}={g['setting']}"
                            if g["setting"] else ""),
             {m: g[m]["values"] for m in metric_names})
            for g in summary["groups"]]
  io_utils.atomic_write_bytes(os.path.join(out, "study.png"),
                              plots.figure_png(plots.study_figure(
                                  groups, [(m, labels[m])
                                           for m in metric_names],
                                  title=header)))
  seeds = len({r.seed for r in runs})
  io_utils.atomic_write_bytes(
      os.path.join(out, "comparison.png"),
      plots.figure_png(plots.training_curves_figure(
          {label: mean_log(parts) for label, parts in logs.items()},
          burn_in, title=header + (
              f" (mean over {seeds} seeds)" if seeds > 1 else ""))))
  return text
