"""The cross-generation matrices of a cross-run report (`tables.Report`): thinker stages x reader
stages, mean ± std over seeds, as markdown tables and heatmaps.

A stage evaluated with the "cross_generation" metric reports "cross_generation/<reader>" for
each reader stage that read its greedy thinking (`EvalConfig.readers`). Per experiment and split,
the stages read by the same readers form one matrix: rows think, columns read and answer. A stage's
own greedy accuracy (maj@1) and the share of its thinking spans that close stand beside it.
"""

from __future__ import annotations

import os

from rlthink.evaluation.tables import ordered

PREFIX = "cross_generation/"
_BESIDE = ("maj@1", "closed_rate")  # the thinker's own accuracy, its closed-thinking share


def matrices(rows: list[dict]) -> list[dict]:
  """One matrix per (experiment, split, reader set) of the whole-split report rows.

  Each: {"experiment", "split", "thinkers": [stage...], "readers": [stage...], "cells":
  {thinker: {reader: {"mean", "std", "n", ...}}}, "beside": {thinker: {"maj@1": stat or None,
  "closed_rate": ...}}}, in the report's stage order.
  """
  groups: dict[tuple, dict] = {}
  for row in rows:
    if row["field"] is not None:
      continue
    readers = tuple(k[len(PREFIX):] for k in row["metrics"] if k.startswith(PREFIX))
    if not readers:
      continue
    key = (row["experiment"], row["split"], tuple(sorted(readers)))
    group = groups.setdefault(key, {"experiment": row["experiment"], "split": row["split"],
                                    "thinkers": [], "readers": list(readers), "cells": {},
                                    "beside": {}})
    group["thinkers"].append(row["stage"])
    group["cells"][row["stage"]] = {r: row["metrics"][PREFIX + r] for r in readers}
    group["beside"][row["stage"]] = {k: row["metrics"].get(k) for k in _BESIDE}
  return list(groups.values())


def _stat(stat) -> str:
  return "-" if stat is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def markdown_lines(rows: list[dict]) -> list[str]:
  """A section per matrix, `### cross-generation: <split> (<thinkers>)` (the experiment first when
  the report has several), with its thinker x reader table."""
  found = matrices(rows)
  several = len({m["experiment"] for m in found}) > 1
  lines = []
  for m in found:
    where = f"{m['experiment']}, {m['split']}" if several else m["split"]
    lines += [f"### cross-generation: {where} ({', '.join(m['thinkers'])})", "",
              "Rows think (greedy), columns read the thinking and answer; mean ± std over "
              "seeds of the readers' accuracy.", "",
              "| thinker | " + " | ".join(m["readers"]) + " | own answers (maj@1) | "
              "closed thinking |", "|---|" + "---|" * (len(m["readers"]) + 2)]
    for t in m["thinkers"]:
      cells = [_stat(m["cells"][t][r]) for r in m["readers"]]
      cells += [_stat(m["beside"][t]["maj@1"]), _stat(m["beside"][t]["closed_rate"])]
      lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("")
  return lines


def heatmap_name(matrix: dict, several_experiments: bool = False) -> str:
  """cross_generation_<split>_<first thinker>.png (the experiment first when there are several)."""
  from rlthink.evaluation.table_writers import file_name  # cycle: table_writers imports this
  parts = ([matrix["experiment"]] if several_experiments else []) + [matrix["split"],
                                                                     matrix["thinkers"][0]]
  return "cross_generation_" + "_".join(file_name(p) for p in parts) + ".png"


def write_heatmaps(rows: list[dict], out: str) -> dict[str, str]:
  """A heatmap of each matrix's means under `out`; returns {file name: path}."""
  import matplotlib.pyplot as plt  # heavy: matplotlib loads only when plotting
  from rlthink.evaluation import cross_generation as cg  # JAX: only when there is a matrix
  found = matrices(rows)
  several = len({m["experiment"] for m in found}) > 1
  paths = {}
  for m in found:
    name = heatmap_name(m, several)
    paths[name] = os.path.join(out, name)
    result = {"accuracy": {t: {r: m["cells"][t][r]["mean"] for r in m["readers"]}
                           for t in m["thinkers"]}}
    title = f"cross-generation, {m['split']} (mean over {_seeds(m)} seeds)"
    plt.close(cg.plot_cross_generation(result, paths[name], title=title))
  return paths


def _seeds(matrix: dict) -> str:
  counts = ordered([[str(c["n"]) for c in row.values()] for row in matrix["cells"].values()])
  return "/".join(counts)
