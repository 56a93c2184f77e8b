"""The files of a cross-run report (`tables.Report`): the markdown tables, a bar chart per split
(mean with std error bars over seeds, the reference numbers as black marks) and the
sample-complexity curves (a metric against the samples drawn, one line per RL stage, a band of
± std over seeds)."""

from __future__ import annotations

import os
import re

import numpy as np

from rlthink.evaluation import cross_generation_tables, sample_complexity
from rlthink.evaluation.report import new_figure
from rlthink.evaluation.tables import STD_NOTE, metric_order, ordered

ACCURACY_PREFIXES = ("maj@", "likelihood", "pass@", "rerank@", "cross_generation/",
                     "sample_accuracy")


def _number(value: float) -> str:
  return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _cell(row: dict, name: str) -> str:
  stat, ref = row["metrics"].get(name), row["reference"].get(name)
  text = "-" if stat is None else f"{_number(stat['mean'])} ± {_number(stat['std'])}"
  return text if ref is None else f"{text} (ref {_number(float(ref))})"


def markdown(report) -> str:
  """report.md: per experiment, the stage x split table, one table per breakdown field, and the
  per-seed values."""
  lines = ["# rlthink report", "", f"{STD_NOTE}; (ref x) = the reference number the experiment "
           "names.", ""]
  for experiment in ordered([[r["experiment"] for r in report.rows]]):
    rows = [r for r in report.rows if r["experiment"] == experiment]
    seeds = sorted({s for r in rows for s in r["seeds"]})
    lines += [f"## {experiment}", "", f"seeds: {', '.join(map(str, seeds))}", ""]
    main = [r for r in rows if r["field"] is None]
    names = metric_order([k for r in main for k in list(r["metrics"]) + list(r["reference"])])
    lines += _table(["stage", "algorithm", "split", "n"] + names, [
        [r["stage"], r["algorithm"] or "", r["split"], str(r["n"])] + [_cell(r, k) for k in names]
        for r in main])
    for field in ordered([[r["field"] for r in rows if r["field"] is not None]]):
      part = [r for r in rows if r["field"] == field]
      names = metric_order([k for r in part for k in r["metrics"]])
      lines += [f"### by {field}", ""]
      lines += _table(["stage", "split", field, "n", "examples"] + names, [
          [r["stage"], r["split"], str(r["value"]), str(r["n"]), str(r["examples"])]
          + [_cell(r, k) for k in names] for r in part])
    lines += ["### per seed", ""]
    names = metric_order([k for r in main for k in r["metrics"]])
    body = []
    for r in main:
      for seed in r["seeds"]:
        cells = []
        for k in names:
          stat = r["metrics"].get(k)
          found = stat is not None and seed in stat["seeds"]
          cells.append(_number(stat["values"][stat["seeds"].index(seed)]) if found else "-")
        body.append([r["stage"], r["split"], str(seed)] + cells)
    lines += _table(["stage", "split", "seed"] + names, body)
    lines += _gain_table([c for c in report.curves if c["experiment"] == experiment],
                         report.metric)
    lines += cross_generation_tables.markdown_lines(rows)
  return "\n".join(lines)


def _gain_table(curves, metric: str) -> list[str]:
  """Per RL stage: its start, final value and the completions it samples to reach 90% of its
  final gain (`sample_complexity`), mean ± std over seeds."""
  curves = [c for c in curves if c.get("gain", {}).get("start")]
  if not curves:
    return []
  share = f"{curves[0]['gain']['fraction']:.0%}"
  stat = lambda s: f"{_number(s['mean'])} ± {_number(s['std'])}"
  body = []
  for c in curves:
    gain = c["gain"]
    samples = "no gain" if gain["mean"] is None else (
        f"{gain['mean']:.0f} ± {gain['std']:.0f} (n={len(gain['values'])})")
    mean_curve = "-" if gain["of_mean_curve"] is None else f"{gain['of_mean_curve']:.0f}"
    body.append([c["stage"], stat(gain["start"]), stat(gain["final"]), samples, mean_curve])
  return [f"### completions sampled to reach {share} of the final {metric} gain", ""] + _table(
      ["stage", f"start {metric}", f"final {metric}", "completions (per seed)",
       "on the mean curve"], body)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(cells) + " |" for cells in body] + [""])


def file_name(text: str) -> str:
  """A file-name-safe form of a split or metric name ("maj@1" -> "maj_at_1")."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("@", "_at_"))


def write_plots(report, out: str) -> dict[str, str]:
  """bars_<split>.png for each split, samples_<metric>.png when RL stages recorded curves and
  the cross-generation heatmaps (`cross_generation_tables`); returns {file name: path}."""
  paths = {}
  rows = [r for r in report.rows if r["field"] is None]
  several = len({r["experiment"] for r in rows}) > 1
  label = lambda r: f"{r['experiment']}/{r['stage']}" if several else r["stage"]
  for split in dict.fromkeys(r["split"] for r in rows):
    part = [r for r in rows if r["split"] == split]
    names = [m for m in metric_order([k for r in part for k in r["metrics"]])
             if m.startswith(ACCURACY_PREFIXES)]
    if names:
      name = f"bars_{file_name(split)}.png"
      paths[name] = os.path.join(out, name)
      _bars(part, names, label, f"{split}: {', '.join(names)}", paths[name])
  curves = [c for c in report.curves
            if not report.curve_stages or c["stage"] in report.curve_stages]
  if curves:
    name = f"samples_{file_name(report.metric)}.png"
    paths[name] = os.path.join(out, name)
    _curves(curves, report.metric, several, paths[name])
  paths.update(cross_generation_tables.write_heatmaps(report.rows, out))
  return paths


def _bars(rows, names, label, title, path) -> None:
  fig, ax = new_figure()
  fig.set_size_inches(max(5.0, 1.0 + 0.35 * len(rows) * len(names)), 3.8)
  width = 0.8 / len(names)
  x = np.arange(len(rows))
  for j, name in enumerate(names):
    stats = [r["metrics"].get(name) for r in rows]
    means = [s["mean"] if s else np.nan for s in stats]
    stds = [s["std"] if s else 0.0 for s in stats]
    at = x - 0.4 + width * (j + 0.5)
    ax.bar(at, means, width, yerr=stds, capsize=2, label=name)
    refs = [r["reference"].get(name) for r in rows]
    if any(v is not None for v in refs):
      ax.scatter(at, [np.nan if v is None else float(v) for v in refs], marker="_", s=120,
                 color="k", zorder=3, label="reference" if j == 0 else None)
  ax.set_xticks(x, [label(r) for r in rows], rotation=20, ha="right", fontsize=7)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("accuracy (mean ± std over seeds)", fontsize=8)
  ax.set_title(title, fontsize=9)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def _curves(curves, metric, several, path) -> None:
  """Each curve from its start (x = 0: the model the stage starts from) through its
  evaluations, a band of ± std, and a dotted line where it reaches 90% of its gain."""
  fig, ax = new_figure()
  for curve in curves:
    x, mean, std = (np.asarray(curve[k], np.float64) for k in ("samples", "mean", "std"))
    gain = curve.get("gain") or {}
    if gain.get("start"):
      x = np.concatenate([[0.0], x])
      mean = np.concatenate([[gain["start"]["mean"]], mean])
      std = np.concatenate([[gain["start"]["std"]], std])
    name = f"{curve['experiment']}/{curve['stage']}" if several else curve["stage"]
    line, = ax.plot(x, mean, marker="o", markersize=3, label=name)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if gain.get("mean") is not None:
      ax.axvline(gain["mean"], color=line.get_color(), linestyle=":", linewidth=1)
  ax.set_xlabel("completions sampled (cumulative; dotted: where each reaches "
                f"{sample_complexity.GAIN_FRACTION:.0%} of its gain)", fontsize=8)
  ax.set_ylabel(f"{metric} (mean ± std over seeds)", fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
