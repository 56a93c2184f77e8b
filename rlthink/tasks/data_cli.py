"""`rlthink data build NAME`: build one task dataset and report its statistics.

`build(name, options, data_dir)` builds (or reuses) the TFDS dataset of `rlthink.tasks.get(name,
**options)` and returns a JSON-ready dict: where it is, its options, and per split the number of
examples, prompt/reference lengths in characters, and the mean of every int/float/bool field
(e.g. "num_steps", "hops", "shortcut_works" — the measured shortcut rate of general_qa).
"""

from __future__ import annotations

import ast
import json
import time

import numpy as np

import rlthink.tasks
from rlthink.tasks import builder


def parse_options(params: list[str]) -> dict:
  """["size='tiny'", "seed=3", "operations=('+','-')"] -> options; bare words are strings.

  Raises ValueError naming the parameter that is not `key=value`.
  """
  options = {}
  for param in params:
    key, eq, value = param.partition("=")
    if not eq or not key.strip().isidentifier():
      raise ValueError(f"task option {param!r}: expected key=value, e.g. size='tiny'")
    try:
      options[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      options[key.strip()] = value.strip()
  return options


def split_statistics(task: rlthink.tasks.Task, split: str) -> dict:
  """Counts, prompt/reference lengths (characters) and means of numeric fields of one split."""
  examples = task.examples(split)
  stats: dict = {"examples": len(examples)}
  if not len(examples):
    return stats
  rows = [examples[i] for i in range(len(examples))]
  prompts = np.asarray([len(task.prompt(e)) for e in rows])
  references = np.asarray([len(task.reference(e)) for e in rows])
  stats.update(prompt_chars_mean=float(prompts.mean()), prompt_chars_max=int(prompts.max()),
               reference_chars_mean=float(references.mean()),
               reference_chars_max=int(references.max()))
  for key, kind in task.features.items():
    if kind in ("int", "float", "bool"):
      stats[f"{key}_mean"] = float(np.mean([float(e[key]) for e in rows]))
  return stats


def build(name: str, options: dict, data_dir: str | None = None) -> dict:
  """Builds task `name` with `options` under `data_dir` and returns its statistics."""
  if data_dir is not None:
    options = dict(options, data_dir=data_dir)
  task = rlthink.tasks.get(name, **options)
  start = time.perf_counter()
  info = builder.statistics(task)
  info["build_seconds"] = round(time.perf_counter() - start, 3)
  num_bytes = info.pop("bytes")
  del info["examples"]
  info["splits"] = {split: dict(split_statistics(task, split), bytes=num_bytes[split])
                    for split in task.splits}
  return info


def format_statistics(stats: dict) -> str:
  """The statistics as indented JSON (what the CLI prints)."""
  return json.dumps(stats, indent=2, sort_keys=False, default=str)
