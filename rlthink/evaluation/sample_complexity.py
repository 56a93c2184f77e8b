"""Sample complexity of an RL stage, read from its saved history: a metric against the
completions sampled, and how many completions the stage needs to reach a share of its final gain.

The curve of one run starts at the model the stage starts from and follows its evaluations:

    (0, y_0)      y_0 = the metric of the stage's start (its parent's final evaluation, or the
                  run's initial one for a stage without a parent);
    (x_i, y_i)    x_i = completions sampled up to evaluated iteration i (the cumulative "samples"
                  of the history records), y_i = the history's eval_<metric> after it.

The gain is y_last - y_0; `samples_to_gain` is where the piecewise-linear curve through these
points first reaches y_0 + fraction * gain (Havrilla et al. 2024 compare EI and PPO this way:
completions to reach 90% of the final maj@1 gain). No gain (y_last <= y_0): None.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

GAIN_FRACTION = 0.9


def history_points(history: Sequence[dict], metric: str) -> list[tuple[int, float, float]]:
  """(iteration, cumulative samples, eval_<metric>) of each evaluated record of a history (a
  record without "samples" counts 0 completions)."""
  key, drawn, out = f"eval_{metric}", 0.0, []
  for record in history:
    drawn += float(record.get("samples") or 0)
    if record.get(key) is not None:
      out.append((int(record["iteration"]), drawn, float(record[key])))
  return out


def samples_to_gain(samples: Sequence[float], values: Sequence[float], start: float,
                    fraction: float = GAIN_FRACTION) -> float | None:
  """Completions sampled when the curve (0, start), (samples[i], values[i])... first reaches
  start + fraction * (values[-1] - start), linear between points; None without a gain."""
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction={fraction}: expected a share of the gain in (0, 1]")
  if len(samples) != len(values):
    raise ValueError(f"{len(samples)} sample counts but {len(values)} values")
  if not values or not values[-1] > start:
    return None
  target = start + fraction * (values[-1] - start)
  x0, y0 = 0.0, float(start)
  for x1, y1 in zip(samples, values):
    if y1 >= target:  # y0 < target: the first point at or above it
      return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))
    x0, y0 = float(x1), float(y1)
  raise AssertionError("unreachable: the last value is at or above the target")


def start_value(data: dict, stage: str, metric: str) -> float | None:
  """The metric of the model `stage` starts from, in one run's results.json `data`: its
  parent's final evaluation (the first split the stage itself reports), or the run's initial
  evaluation for a stage without a parent; None when that is not in the results."""
  entry = data["stages"].get(stage) or {}
  parent = entry.get("parent")
  results = (data["stages"].get(parent) or {}).get("results") if parent else data.get("initial")
  if not results:
    return None
  split = next(iter(entry.get("results") or results))
  value = (results.get(split) or {}).get(metric)
  return None if value is None else float(value)


def mean_std(values: Sequence[float]) -> dict:
  """The report's statistic over seeds: {"mean", "std" (numpy, ddof=0), "n"}."""
  a = np.asarray(values, np.float64)
  return {"mean": float(a.mean()), "std": float(a.std(ddof=0)), "n": len(values)}


def gain_summary(per_seed: Sequence[tuple[int, list[float], list[float], float | None]],
                 fraction: float = GAIN_FRACTION) -> dict:
  """Over the seeds of one stage, each (seed, samples, values, start): the start and final
  values, and the completions to reach `fraction` of the gain per seed ("values", "seeds"),
  their mean ± std (ddof=0; over the seeds with a gain) and on the mean curve ("of_mean_curve":
  the mean start and the mean value at each evaluated sample count). Seeds without a start
  are left out."""
  known = [(s, xs, ys, y0) for s, xs, ys, y0 in per_seed if y0 is not None and ys]
  out = {"fraction": fraction, "start": None, "final": None, "values": [], "seeds": [],
         "mean": None, "std": None, "of_mean_curve": None}
  if not known:
    return out
  out["start"] = mean_std([y0 for _, _, _, y0 in known])
  out["final"] = mean_std([ys[-1] for _, _, ys, _ in known])
  for seed, xs, ys, y0 in known:
    value = samples_to_gain(xs, ys, y0, fraction)
    if value is not None:
      out["values"].append(value)
      out["seeds"].append(seed)
  if out["values"]:
    out.update({k: v for k, v in mean_std(out["values"]).items() if k != "n"})
  if len({len(xs) for _, xs, _, _ in known}) == 1:  # the seeds evaluated at the same iterations
    xs = np.mean([xs for _, xs, _, _ in known], axis=0)
    ys = np.mean([ys for _, _, ys, _ in known], axis=0)
    out["of_mean_curve"] = samples_to_gain(list(xs), list(ys), out["start"]["mean"], fraction)
  return out
