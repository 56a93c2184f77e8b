"""Per-example evaluation records, the metrics computed from them, and their JSON-lines files.

`evaluate_with_predictions` scores every example once and keeps one record (a "row") per example:

  id, question, answer     the example's own fields
  <breakdown fields>       the example's values of `EvalConfig.breakdown` (bool / int / str)
  greedy, greedy_correct   the greedy completion and its verdict (None when maj@1 was not asked)
  n, samples_correct       samples drawn (0 when no sampled pass ran) and how many were right
  maj_answer, maj_correct  the majority answer of the first k samples (str or None) and its verdict
  rerank_correct           the ORM's pick among the first k samples was right (rerank@k only)
  read_by                  {reader: mean verifier score of the reader's answers} (cross-generation)
  option_logprobs          per option, log p(its answer | prompt, empty thinking) (likelihood)
  likelihood_choice, likelihood_correct   the most likely option and whether it is the right one

Every metric of a split, and of each breakdown group, is a mean over rows (`summarize`), so a
table read from the saved predictions gives exactly the numbers `evaluate` reported.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np

from rlthink.evaluation.estimators import pass_at_k


def pass_curve_ks(n: int) -> list[int]:
  """k = 1, 2, 4, ... up to n (n itself always included)."""
  ks = [1]
  while ks[-1] * 2 <= n:
    ks.append(ks[-1] * 2)
  return ks if ks[-1] == n else ks + [n]


def plain(value):
  """A JSON-ready copy of an example field (numpy scalars and arrays, bytes -> Python values)."""
  if isinstance(value, np.ndarray):
    return [plain(v) for v in value.tolist()]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  return value


def new_row(example: dict, fields: Sequence[str], split: str) -> dict:
  """The record of one example before scoring; raises naming a breakdown field it lacks."""
  row = {"id": plain(example.get("id")), "question": plain(example.get("question")),
         "answer": plain(example.get("answer"))}
  for field in fields:
    if field not in example:
      raise ValueError(f"EvalConfig.breakdown names field {field!r}, but example "
                       f"{example.get('id')!r} of split {split!r} has only {sorted(example)}")
    row[field] = plain(example[field])
  row.update(greedy=None, greedy_correct=None, n=0, samples_correct=0, maj_answer=None,
             maj_correct=None)
  return row


def _mean(values: Iterable) -> float:
  return float(np.mean([float(v) for v in values]))


def summarize(rows: Sequence[dict], metrics: Sequence[str], k: int) -> dict:
  """The scalar metrics of `metrics` (EvalConfig names: "maj@k" reports as f"maj@{k}") over rows.

  "sample_accuracy" (the fraction of right samples) comes with any sampled metric, "pass_curve"
  ({k: pass@k}) with pass@k; cross-generation gives "cross_generation/<reader>", likelihood
  "likelihood" (the share of examples whose most likely option is right). No rows: {}.
  """
  if not rows:
    return {}
  out = {}
  if "maj@1" in metrics:
    out["maj@1"] = _mean(r["greedy_correct"] for r in rows)
  if "maj@k" in metrics:
    out[f"maj@{k}"] = _mean(r["maj_correct"] for r in rows)
  if "pass@k" in metrics:
    out[f"pass@{k}"] = _mean(pass_at_k(r["n"], r["samples_correct"], k) for r in rows)
  if "rerank@k" in metrics:
    out[f"rerank@{k}"] = _mean(r["rerank_correct"] for r in rows)
  if rows[0]["n"]:
    out["sample_accuracy"] = _mean(r["samples_correct"] / r["n"] for r in rows)
  if "likelihood" in metrics:
    out["likelihood"] = _mean(r["likelihood_correct"] for r in rows)
  if "cross_generation" in metrics:
    for reader in rows[0]["read_by"]:
      out[f"cross_generation/{reader}"] = _mean(r["read_by"][reader] for r in rows)
  if "pass@k" in metrics:
    out["pass_curve"] = {str(j): _mean(pass_at_k(r["n"], r["samples_correct"], j) for r in rows)
                         for j in pass_curve_ks(rows[0]["n"])}
  return out


def _value_order(values: list):
  """Group values in a stable order: numeric when every value is a number, else by text."""
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    return sorted(values)
  return sorted(values, key=str)


def breakdown(rows: Sequence[dict], fields: Sequence[str], metrics: Sequence[str],
              k: int) -> dict:
  """{field: {str(value): {metric: value, "n": number of examples}}}: `summarize` per group of
  rows that share the field's value (grouped by the value's text, so True and "True" merge)."""
  out = {}
  for field in fields:
    groups: dict[str, list[dict]] = {}
    first = {}
    for row in rows:
      key = str(row[field])
      groups.setdefault(key, []).append(row)
      first.setdefault(key, row[field])
    order = [str(v) for v in _value_order(list(first.values()))]
    out[field] = {key: {**summarize(groups[key], metrics, k), "n": len(groups[key])}
                  for key in order}
  return out


def write_predictions(path: str, predictions: dict[str, list[dict]]) -> None:
  """JSON lines, one example per line with its "split"; written atomically (a killed run never
  leaves half a file)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for split, rows in predictions.items():
      for row in rows:
        f.write(json.dumps({"split": split, **row}, sort_keys=False) + "\n")
  os.replace(tmp, path)


def read_predictions(path: str) -> dict[str, list[dict]]:
  """{split: rows} from a `write_predictions` file; a bad line is an error naming file and line."""
  out: dict[str, list[dict]] = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        split = row.pop("split")
      except (ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}:{number}: not a prediction record ({e})") from None
      out.setdefault(split, []).append(row)
  return out
