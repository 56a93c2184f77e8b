"""What an experiment is: named stages forming a graph, each with its algorithm, its parent (the
stage whose final parameters it starts from), its data (task, options and a split mixture) and
its own gin scope.

In gin, `Experiment.stages` lists the stages; a stage is an algorithm name (a chain: each starts
from the previous one) or a dict:

    Experiment.stages = [
        {'name': 'sft', 'algorithm': 'sft', 'splits': {'biographies': 1.0, 'mem': 1.0, 'ctx': 1.0}},
        {'name': 'rl_comp', 'algorithm': 'grpo', 'parent': 'sft', 'splits': 'comp'},
        {'name': 'sft_comp', 'algorithm': 'sft', 'parent': None, 'splits': ['biographies', 'comp']},
    ]
    rl_comp/GRPOConfig.learning_rate = 1e-4    # binds stage rl_comp only

Dict keys: name (an identifier, unique; also the stage's directory and gin scope), algorithm
(default: the name), parent (omitted: the previous stage of the list; None: the model's own
initial parameters), task / task_options (default: the experiment's; options given here update
the experiment's when the task is the same), splits (see `Mixture`), mixture_size, evaluate
(default True, False for reward-model stages).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from rlthink import algorithms

STAGE_KEYS = ("name", "algorithm", "parent", "task", "task_options", "splits", "mixture_size",
              "evaluate")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_EVALUATED = ("orm", "prm")  # reward models are no policies to evaluate
_INHERIT = object()  # a dict stage without "parent": the previous stage of the list


class ExperimentError(ValueError):
  """An experiment that cannot run; the message names the stage (and the gin file)."""


@dataclasses.dataclass(frozen=True)
class Mixture:
  """A stage's training data drawn from several splits of its task.

  parts: ((split, amount), ...). Amounts are all ints (that many examples of each split: fewer
  than the split's size takes a seeded subset, more repeats it) or all floats (weights: each
  split's share of `size` examples, `size` defaulting to the sum of the splits' sizes). A plain
  list of splits takes each whole.
  """

  parts: tuple[tuple[str, int | float], ...]
  size: int | None = None

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(split for split, _ in self.parts)

  @property
  def weighted(self) -> bool:
    return any(isinstance(amount, float) for _, amount in self.parts)

  def to_json(self) -> dict:
    return {"parts": [list(p) for p in self.parts], "size": self.size}


def parse_mixture(value: Any, size: int | None, where: str) -> Mixture | None:
  """`splits` of a stage: None, 'a', ['a', 'b'], {'a': 3, 'b': 1} or {'a': 0.75, 'b': 0.25}."""
  if value is None:
    return None
  if isinstance(value, str):
    value = [value]
  if isinstance(value, (list, tuple)):
    if not value or not all(isinstance(v, str) for v in value):
      raise ExperimentError(f"{where}: splits={value!r} must name at least one split")
    parts = tuple((split, None) for split in value)
  elif isinstance(value, dict) and value:
    parts = tuple(value.items())
    amounts = [a for _, a in parts]
    if not (all(isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in amounts)
            or all(isinstance(a, float) and a > 0 for a in amounts)):
      raise ExperimentError(f"{where}: splits={value!r}: the amounts must be all positive ints "
                            "(example counts) or all positive floats (weights)")
  else:
    raise ExperimentError(f"{where}: splits={value!r}; expected a split name, a list of split "
                          "names or a dict {split: count or weight}")
  names = [split for split, _ in parts]
  if len(set(names)) != len(names):
    raise ExperimentError(f"{where}: splits={value!r} names a split twice")
  if size is not None and (not isinstance(size, int) or size < 1):
    raise ExperimentError(f"{where}: mixture_size={size!r} must be a positive int")
  return Mixture(parts, size)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of an experiment (see the module docstring)."""

  name: str
  algorithm: str
  parent: str | None
  task: str
  task_options: dict
  splits: Mixture | None = None
  evaluate: bool = True

  def to_json(self) -> dict:
    return {"name": self.name, "algorithm": self.algorithm, "parent": self.parent,
            "task": self.task, "task_options": dict(self.task_options),
            "splits": self.splits.to_json() if self.splits else None, "evaluate": self.evaluate}


def parse_stages(items: Sequence[Any], task: str, task_options: dict,
                 where: str = "Experiment.stages") -> tuple[Stage, ...]:
  """The stages of `items` (names or dicts), checked: known algorithms, unique identifier names,
  parents that exist, no cycle. Raises `ExperimentError` naming the stage and `where`."""
  if isinstance(items, (str, dict)):
    items = [items]
  if not items:
    raise ExperimentError(f"{where}: Experiment.stages is empty")
  stages, previous = [], None
  for i, item in enumerate(items):
    spec = {"name": item} if isinstance(item, str) else item
    if not isinstance(spec, dict):
      raise ExperimentError(f"{where}: stage {i} is {item!r}; expected an algorithm name or a dict")
    name = spec.get("name", spec.get("algorithm"))
    label = f"{where}: stage {name!r}" if name else f"{where}: stage {i}"
    unknown = sorted(set(spec) - set(STAGE_KEYS))
    if unknown:
      raise ExperimentError(f"{label}: unknown key(s) {unknown}; expected some of {STAGE_KEYS}")
    if not isinstance(name, str) or not _NAME.match(name):
      raise ExperimentError(f"{label}: the name must be an identifier (letters, digits, _)")
    algorithm = spec.get("algorithm", name)
    if algorithm not in algorithms.ALGORITHMS:
      raise ExperimentError(f"{label}: unknown algorithm {algorithm!r}; expected one of "
                            f"{sorted(algorithms.ALGORITHMS)}")
    parent = spec.get("parent", _INHERIT) if isinstance(item, dict) else _INHERIT
    parent = previous if parent is _INHERIT else parent
    stage_task = spec.get("task", task)
    options = dict(task_options) if stage_task == task else {}
    options.update(spec.get("task_options") or {})
    stages.append(Stage(
        name=name, algorithm=algorithm, parent=parent, task=stage_task, task_options=options,
        splits=parse_mixture(spec.get("splits"), spec.get("mixture_size"), label),
        evaluate=bool(spec.get("evaluate", algorithm not in _NOT_EVALUATED))))
    previous = name
  check_graph(stages, where)
  return tuple(stages)


def check_graph(stages: Sequence[Stage], where: str) -> None:
  """Unique names, parents that name a stage, no cycle."""
  names = [s.name for s in stages]
  for s in stages:
    if names.count(s.name) > 1:
      raise ExperimentError(f"{where}: stage name {s.name!r} is used {names.count(s.name)} "
                            "times; give each stage its own name (it is its directory and gin "
                            "scope)")
  for s in stages:
    if s.parent is not None and s.parent not in names:
      raise ExperimentError(f"{where}: stage {s.name!r}: parent {s.parent!r} is not a stage of "
                            f"the experiment (stages: {names})")
  parent_of = {s.name: s.parent for s in stages}
  for s in stages:
    seen, node = [s.name], s.parent
    while node is not None:
      if node in seen:
        raise ExperimentError(f"{where}: stages {seen + [node]} form a cycle of parents")
      seen.append(node)
      node = parent_of[node]


def run_order(stages: Sequence[Stage]) -> list[Stage]:
  """The stages in an order where every parent runs before its children (list order where the
  list already allows it)."""
  done, order, pending = set(), [], list(stages)
  while pending:
    ready = next(s for s in pending if s.parent is None or s.parent in done)
    pending.remove(ready)
    order.append(ready)
    done.add(ready.name)
  return order


def check_splits(stages: Sequence[Stage], tasks: dict, where: str) -> None:
  """Every split a stage's mixture names exists in its task (`tasks[stage.name]`)."""
  for s in stages:
    task = tasks[s.name]
    for split in (s.splits.splits if s.splits else ()):
      if split not in task.splits:
        raise ExperimentError(f"{where}: stage {s.name!r}: task {s.task!r} has no split "
                              f"{split!r} (its splits: {list(task.splits)})")
