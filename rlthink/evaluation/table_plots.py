"""The PNGs of a cross-run report (`tables.Report`): a bar chart per split (mean with std error
bars over seeds, the reference numbers as black marks) and the sample-complexity curves (a metric
against the samples drawn, one line per RL stage, a band of ± std over seeds)."""

from __future__ import annotations

import os
import re

import numpy as np

from rlthink.evaluation.report import new_figure

ACCURACY_PREFIXES = ("maj@", "pass@", "rerank@", "cross_generation/", "sample_accuracy")


def file_name(text: str) -> str:
  """A file-name-safe form of a split or metric name ("maj@1" -> "maj_at_1")."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("@", "_at_"))


def write_plots(report, out: str) -> dict[str, str]:
  """bars_<split>.png for each split and samples_<metric>.png when RL stages recorded curves;
  returns {file name: path}."""
  from rlthink.evaluation.tables import metric_order
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
  if report.curves:
    name = f"samples_{file_name(report.metric)}.png"
    paths[name] = os.path.join(out, name)
    _curves(report.curves, report.metric, several, paths[name])
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
  fig, ax = new_figure()
  for curve in curves:
    x, mean, std = (np.asarray(curve[k], np.float64) for k in ("samples", "mean", "std"))
    name = f"{curve['experiment']}/{curve['stage']}" if several else curve["stage"]
    line, = ax.plot(x, mean, marker="o", markersize=3, label=name)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  ax.set_xlabel("samples drawn (cumulative)")
  ax.set_ylabel(f"{metric} (mean ± std over seeds)", fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
