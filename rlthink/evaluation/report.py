"""Evaluation reports: JSON, a markdown table and matplotlib plots (PNG) in the workdir."""

from __future__ import annotations

import json
import os
from typing import Sequence


def metric_columns(results: dict) -> list[str]:
  """The scalar metrics of one split's results, in report order."""
  first = next(iter(results.values()))
  order = ["maj@1"] + sorted(k for k in first if k.startswith("maj@") and k != "maj@1")
  order += sorted(k for k in first if k.startswith("pass@")) + ["sample_accuracy"]
  return [k for k in order if k in first]


def markdown_table(rows: Sequence[tuple[str, dict]]) -> str:
  """One line per (run name, split): rows are (name, {split: metrics})."""
  columns = metric_columns(rows[0][1])
  lines = ["| run | split | " + " | ".join(columns) + " |",
           "|---|---|" + "---|" * len(columns)]
  for name, results in rows:
    for split, metrics in results.items():
      cells = [f"{metrics[c]:.3f}" if c in metrics else "-" for c in columns]
      lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)  # atomic: a killed run never leaves half a file


def plot_pass_curves(rows: Sequence[tuple[str, dict]], path: str) -> None:
  """pass@k vs k (log2 axis), one line per (run, split)."""
  fig, ax = new_figure()
  for name, results in rows:
    for split, metrics in results.items():
      if "pass_curve" not in metrics:  # pass@k was not asked for
        continue
      ks = sorted(int(k) for k in metrics["pass_curve"])
      ax.plot(ks, [metrics["pass_curve"][str(k)] for k in ks], marker="o", label=f"{name} {split}")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k")
  ax.set_ylabel("pass@k")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def plot_history(history: Sequence[dict], keys: Sequence[str], path: str,
                 xlabel: str = "iteration") -> None:
  """Metrics per iteration (e.g. EI's eval maj@1 and train solve rate)."""
  fig, ax = new_figure()
  for key in keys:
    points = [(h["iteration"], h[key]) for h in history if h.get(key) is not None]
    if points:
      ax.plot(*zip(*points), marker="o", label=key)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("accuracy")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def new_figure():
  """A figure drawn straight to a file: no pyplot, so the caller's backend (e.g. a notebook's
  inline plots) stays as it was."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(5, 3.5))
  return fig, fig.subplots()
