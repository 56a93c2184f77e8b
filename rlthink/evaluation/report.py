"""Evaluation reports: JSON, a markdown table and matplotlib plots (PNG) in the workdir."""

from __future__ import annotations

import json
import os
from typing import Sequence


def metric_columns(results: dict) -> list[str]:
  """The scalar metrics of one split's results, in report order."""
  first = next(iter(results.values()))
  order = ["maj@1"] + sorted(k for k in first if k.startswith("maj@") and k != "maj@1")
  order += ["likelihood"] + sorted(k for k in first if k.startswith("pass@"))
  order += ["sample_accuracy"]
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


def plot_pass_curves(rows: Sequence[tuple[str, dict]], path: str, title: str = "pass@k"):
  """pass@k vs k (log2 axis, ticks at the k measured), one line per (run, split); returns the
  figure."""
  fig, ax = new_figure()
  measured = set()
  for name, results in rows:
    for split, metrics in results.items():
      if "pass_curve" not in metrics:  # pass@k was not asked for
        continue
      ks = sorted(int(k) for k in metrics["pass_curve"])
      measured.update(ks)
      ax.plot(ks, [metrics["pass_curve"][str(k)] for k in ks], marker="o", label=f"{name} {split}")
  ax.set_xscale("log", base=2)
  if measured:
    ax.set_xticks(sorted(measured), [str(k) for k in sorted(measured)])
    ax.minorticks_off()
  ax.set_title(title)
  ax.set_xlabel("k (samples per question)")
  ax.set_ylabel("pass@k")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  if ax.lines:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return fig


# Metrics measured on the model a round starts from (its sampling), not the one it produced.
_BEFORE_ROUND = ("solve_rate",)


def plot_history(history: Sequence[dict], keys: Sequence[str], path: str,
                 xlabel: str = "iteration", title: str | None = None,
                 initial: dict | None = None):
  """Metrics per iteration (e.g. EI's eval maj@1 and train solve rate) on an integer axis that
  starts at the stage's start (iteration 0: the model it begins from), and the training loss per
  iteration beside them when the history holds `train_loss`; returns the figure.

  A record's `solve_rate` (measured while sampling round i) belongs to the model round i starts
  from, so it is drawn at i - 1; everything else at i. `initial` gives iteration-0 values of
  other keys (e.g. {"eval_maj@1": the parent's maj@1}).
  """
  from matplotlib.ticker import MaxNLocator  # heavy: matplotlib loads only when plotting
  losses = [(h["iteration"], h["train_loss"]) for h in history
            if isinstance(h.get("train_loss"), (int, float))]
  fig, axes = new_figure(2 if losses else 1)
  ax = axes[0]
  for key in keys:
    shift = 1 if key in _BEFORE_ROUND else 0
    points = [(h["iteration"] - shift, h[key]) for h in history if h.get(key) is not None]
    if initial and initial.get(key) is not None and not any(x == 0 for x, _ in points):
      points.insert(0, (0, initial[key]))
    if points:
      ax.plot(*zip(*points), marker="o", label=key)
  ax.set_title(f"{title}: accuracy" if title else "accuracy")
  ax.set_ylabel("accuracy")
  ax.set_ylim(0, 1)
  if ax.lines:
    ax.legend(fontsize=7)
  if losses:
    axes[1].plot(*zip(*losses), marker="o", color="tab:red", label="train_loss")
    axes[1].set_title(f"{title}: training loss" if title else "training loss")
    axes[1].set_ylabel("loss (last step of the iteration)")
  last = max([h["iteration"] for h in history] or [1])
  for a in axes:
    a.set_xlabel(f"{xlabel} (0 = the stage's start)")
    a.set_xlim(-0.25, last + 0.25)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return fig


def new_figure(panels: int = 0):
  """A figure drawn straight to a file: no pyplot, so the caller's backend (e.g. a notebook's
  inline plots) stays as it was. (figure, axes); `panels` > 0: that many axes side by side, as
  a list."""
  from matplotlib.figure import Figure  # heavy: matplotlib loads only when plotting
  if panels:
    fig = Figure(figsize=(5 * panels, 3.5))
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])
  fig = Figure(figsize=(5, 3.5))
  return fig, fig.subplots()
