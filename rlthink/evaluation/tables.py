"""Reports across runs: `rlthink report <run or sweep dir>...`.

One table over experiments x stages x splits (x breakdown values) with the mean ± std over seeds
(numpy std, ddof=0) and n (the number of seeds), the paper's reference numbers beside ours when
the experiment names them; written as markdown (report.md), JSON (report.json) and PNG (a bar
chart per split; accuracy against samples drawn for RL stages: `table_writers`).

Inputs (as the experiment runner writes them):
  <run>/results.json    {"experiment", "seed", "order": [stage...], "references":
                         {stage: {split: {metric: value}}}, "stages": {stage: {"algorithm",
                         "parent", "results": evaluate() output, "history": [{"iteration",
                         "samples", "eval_<metric>", ...}]}}}
  <sweep>/sweep.json    {"seeds": [...], "runs": {seed: run dir relative to the sweep}}
Runs of one experiment name are pooled over seeds, whichever paths they come from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from typing import Sequence

import numpy as np

from rlthink.evaluation import sample_complexity
from rlthink.evaluation.report import write_json

RESULTS, SWEEP = "results.json", "sweep.json"
STD_NOTE = "mean ± std over seeds (numpy std, ddof=0); n = number of seeds"
_SKIP = ("num_examples", "n")  # counts, not metrics


@dataclasses.dataclass
class Run:
  """One run's results.json: where it came from, its experiment name and seed."""

  path: str
  experiment: str
  seed: int
  data: dict


@dataclasses.dataclass
class Report:
  """rows: one per (experiment, stage, split, field, value) with "metrics": {metric: {"mean",
  "std", "n", "values", "seeds"}} and "reference": {metric: value}; field/value are None for the
  whole split. curves: per (experiment, stage) the `metric` against cumulative samples drawn,
  with its gain summary. curve_stages: the stages whose curves the samples plot overlays (empty:
  every curve)."""

  rows: list[dict]
  curves: list[dict]
  runs: list[Run]
  metric: str = "maj@1"
  curve_stages: tuple[str, ...] = ()

  def markdown(self) -> str:
    from rlthink.evaluation import table_writers  # cycle: table_writers imports this module
    return table_writers.markdown(self)

  def to_json(self) -> dict:
    return {"note": STD_NOTE, "metric": self.metric, "rows": self.rows, "curves": self.curves,
            "runs": [{"experiment": r.experiment, "seed": r.seed, "path": r.path}
                     for r in self.runs]}

  def write(self, out: str) -> dict[str, str]:
    """Writes report.md, report.json and the PNGs under `out`; returns {name: path}."""
    from rlthink.evaluation import table_writers  # cycle: table_writers imports this module
    os.makedirs(out, exist_ok=True)
    paths = {"report.md": os.path.join(out, "report.md"),
             "report.json": os.path.join(out, "report.json")}
    with open(paths["report.md"] + ".tmp", "w") as f:
      f.write(self.markdown())
    os.replace(paths["report.md"] + ".tmp", paths["report.md"])
    write_json(paths["report.json"], self.to_json())
    paths.update(table_writers.write_plots(self, out))
    return paths


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      value = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def _load_run(directory: str, seed=None) -> Run:
  path = os.path.join(directory, RESULTS)
  data = _read_json(path)
  if not isinstance(data.get("stages"), dict):
    raise ValueError(f"{path}: key 'stages' must map stage names to their results")
  seed = data.get("seed", seed)
  if seed is None:
    raise ValueError(f"{path}: key 'seed' is missing")
  return Run(directory, str(data.get("experiment") or os.path.basename(directory)), int(seed),
             data)


def load_runs(paths: Sequence[str]) -> list[Run]:
  """The runs of run directories and sweep directories (a sweep's unfinished runs are skipped
  with a warning). The same experiment and seed in two directories is one run when their stages
  are disjoint (chunks of one experiment run with `--stages`), else an error naming both."""
  runs = []
  for path in paths:
    if os.path.isfile(os.path.join(path, SWEEP)):
      sweep = _read_json(os.path.join(path, SWEEP))
      if not isinstance(sweep.get("runs"), dict):
        raise ValueError(f"{os.path.join(path, SWEEP)}: key 'runs' must map seeds to run dirs")
      for seed, sub in sweep["runs"].items():
        directory = os.path.join(path, sub)
        if not os.path.isfile(os.path.join(directory, RESULTS)):
          logging.warning("report: %s has no %s yet (seed %s unfinished); left out", directory,
                          RESULTS, seed)
          continue
        runs.append(_load_run(directory, seed))
    elif os.path.isfile(os.path.join(path, RESULTS)):
      runs.append(_load_run(path))
    else:
      raise FileNotFoundError(f"{path}: neither a run directory ({RESULTS}) nor a sweep "
                              f"directory ({SWEEP})")
  first: dict[tuple, Run] = {}
  unique = []
  for run in runs:
    key = (run.experiment, run.seed)
    if key not in first:
      first[key] = run
      unique.append(run)
    elif os.path.realpath(first[key].path) != os.path.realpath(run.path):  # not named twice
      first[key].data = _merge_chunks(first[key], run)
  if not unique:
    raise ValueError(f"no finished run under {', '.join(paths)}")
  return unique


def _merge_chunks(a: Run, b: Run) -> dict:
  """One seed's results from two runs of disjoint stages (chunks run with `--stages`)."""
  shared = sorted(set(a.data["stages"]) & set(b.data["stages"]))
  if shared:
    raise ValueError(f"experiment {a.experiment!r} seed {a.seed}: stages {shared} are reported "
                     f"by both {a.path} and {b.path}; report them separately, name the "
                     "experiments apart, or run each stage in one chunk only (--stages)")
  order = list(a.data.get("order") or a.data["stages"])
  order += [s for s in (b.data.get("order") or b.data["stages"]) if s not in order]
  return {**a.data, "stages": {**a.data["stages"], **b.data["stages"]}, "order": order,
          "initial": a.data.get("initial") or b.data.get("initial"),
          "references": {**(b.data.get("references") or {}), **(a.data.get("references") or {})}}


def metric_order(names) -> list[str]:
  """maj@1, maj@k..., likelihood, pass@k..., rerank@k..., cross_generation/..., sample_accuracy,
  the rest."""
  def key(name):
    for rank, prefix in enumerate(("maj@", "likelihood", "pass@", "rerank@", "cross_generation/",
                                   "sample_accuracy")):
      if name.startswith(prefix):
        tail = name[len(prefix):]
        return (rank, int(tail) if tail.isdigit() else 0, name)
    return (9, 0, name)
  return sorted(set(names), key=key)


def _scalars(metrics: dict) -> dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _SKIP}


def _stat(values: list[float], seeds: list[int]) -> dict:
  return {**sample_complexity.mean_std(values), "values": list(values), "seeds": list(seeds)}


def ordered(lists: Sequence[Sequence[str]]) -> list[str]:
  """The names of several lists, each once, in first-seen order."""
  out = []
  for names in lists:
    for name in names:
      if name not in out:
        out.append(name)
  return out


def _group(results: dict, split: str, field: str | None, value: str | None) -> dict | None:
  """One seed's metrics of a split, or of one breakdown group of it (None when absent)."""
  metrics = results.get(split)
  if metrics is not None and field is not None:
    metrics = metrics.get("breakdown", {}).get(field, {}).get(value)
  return metrics


def _rows_of(experiment: str, runs: list[Run]) -> list[dict]:
  references = next((r.data["references"] for r in runs if r.data.get("references")), {})
  rows = []
  for stage in ordered([r.data.get("order") or list(r.data["stages"]) for r in runs]):
    entries = [(r.seed, r.data["stages"][stage]) for r in runs
               if (r.data["stages"].get(stage) or {}).get("results")]
    if not entries:  # not evaluated (a reward model) or not run yet
      continue
    results = [(seed, entry["results"]) for seed, entry in entries]
    for split in ordered([list(res) for _, res in results]):
      fields = ordered([list(res.get(split, {}).get("breakdown", {})) for _, res in results])
      groups = [(None, None)] + [
          (field, value) for field in fields
          for value in ordered([list(res.get(split, {}).get("breakdown", {}).get(field, {}))
                                for _, res in results])]
      for field, value in groups:
        found = [(seed, m) for seed, res in results
                 if (m := _group(res, split, field, value)) is not None]
        stats = {}
        for name in metric_order([k for _, m in found for k in _scalars(m)]):
          pairs = [(seed, _scalars(m)[name]) for seed, m in found if name in _scalars(m)]
          stats[name] = _stat([v for _, v in pairs], [seed for seed, _ in pairs])
        rows.append({
            "experiment": experiment, "stage": stage, "algorithm": entries[0][1].get("algorithm"),
            "split": split, "field": field, "value": value, "n": len(found),
            "seeds": [seed for seed, _ in found], "metrics": stats,
            "examples": found[0][1].get("num_examples" if field is None else "n"),
            "reference": {} if field is not None else dict(
                references.get(stage, {}).get(split, {}))})
  return rows


def sample_curves(experiment: str, runs: list[Run], metric: str) -> list[dict]:
  """Per stage whose history records eval_<metric>: x = cumulative "samples" drawn up to each
  evaluated iteration, y = the metric; mean ± std over seeds at each iteration; "gain": the
  start, the final value and the completions to reach 90% of the gain (`sample_complexity`)."""
  curves = []
  for stage in ordered([r.data.get("order") or list(r.data["stages"]) for r in runs]):
    points: dict[int, list[tuple[float, float]]] = {}
    per_seed = []
    for run in runs:
      history = (run.data["stages"].get(stage) or {}).get("history") or []
      if not any("samples" in h for h in history):  # not a sampling (RL) stage
        continue
      found = sample_complexity.history_points(history, metric)
      for iteration, x, y in found:
        points.setdefault(iteration, []).append((x, y))
      per_seed.append((run.seed, [x for _, x, _ in found], [y for _, _, y in found],
                       sample_complexity.start_value(run.data, stage, metric)))
    if not points:
      continue
    iterations = sorted(points)
    xs = [np.mean([x for x, _ in points[i]]) for i in iterations]
    ys = [np.asarray([y for _, y in points[i]]) for i in iterations]
    curves.append({"experiment": experiment, "stage": stage, "metric": metric,
                   "iteration": iterations, "samples": [float(x) for x in xs],
                   "mean": [float(y.mean()) for y in ys],
                   "std": [float(y.std(ddof=0)) for y in ys], "n": [len(y) for y in ys],
                   "gain": sample_complexity.gain_summary(per_seed)})
  return curves


def build_report(paths: Sequence[str], metric: str = "maj@1",
                 curve_stages: Sequence[str] = ()) -> Report:
  """The report over any mix of run and sweep directories (module doc); curve_stages: the
  stages the samples plot overlays (default: all)."""
  runs = load_runs(paths)
  experiments: dict[str, list[Run]] = {}
  for run in runs:
    experiments.setdefault(run.experiment, []).append(run)
  rows, curves = [], []
  for name, group in experiments.items():
    group.sort(key=lambda r: r.seed)
    rows += _rows_of(name, group)
    curves += sample_curves(name, group, metric)
  unknown = sorted(set(curve_stages) - {c["stage"] for c in curves})
  if unknown:
    raise ValueError(f"report: no {metric} curve for stages {unknown} (stages with one: "
                     f"{ordered([[c['stage'] for c in curves]])})")
  return Report(rows, curves, runs, metric, tuple(curve_stages))


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """`rlthink report` arguments: paths, --out, --metric, --curves."""
  parser.add_argument("paths", nargs="+", help="run directories (results.json) and sweep "
                      "directories (sweep.json), in any mix")
  parser.add_argument("--out", default=None, help="where report.md/.json and the PNGs go "
                      "(default: the only path given, else ./report)")
  parser.add_argument("--metric", default="maj@1", help="the metric of the sample-complexity "
                      "curves (history key eval_<metric>), e.g. maj@1 or pass@8")
  parser.add_argument("--curves", default="", metavar="STAGE[,STAGE...]", help="the stages whose "
                      "curves the samples plot overlays, e.g. ei,ppo (default: every RL stage)")
  return parser


def build_parser() -> argparse.ArgumentParser:
  return add_arguments(argparse.ArgumentParser(
      prog="rlthink report", description="A table over stages x seeds x splits of runs/sweeps."))


def run(args: argparse.Namespace) -> int:
  """Builds and writes the report; prints the markdown."""
  report = build_report(args.paths, args.metric,
                        [s.strip() for s in args.curves.split(",") if s.strip()])
  out = args.out or (args.paths[0] if len(args.paths) == 1 else "report")
  paths = report.write(out)
  print(report.markdown())
  print("wrote " + ", ".join(sorted(paths.values())))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  return run(build_parser().parse_args(argv))


if __name__ == "__main__":
  raise SystemExit(main())
