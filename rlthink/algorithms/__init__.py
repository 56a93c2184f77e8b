"""Algorithms: each module holds its loss (a pure function) and its driver.

An experiment lists stages by name (`Experiment.stages = ('sft', 'ei')`); `STAGES` maps each
name to "module:function" of a driver with the common signature

    run_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn, progress) -> (policy, history)

where the driver reads its own gin-bound config (e.g. `EIConfig()`), resumes from
`<workdir>/<stage>/` when a checkpoint is there, calls `evaluate_fn(policy) -> dict` when it wants
per-iteration evaluation, and returns the trained policy and its per-iteration metrics (a list of
dicts, each with "iteration"). Register a new algorithm by adding it here.
"""

from __future__ import annotations

import importlib
from typing import Callable

STAGES: dict[str, str] = {
    "sft": "rlthink.algorithms.sft:run_stage",
    "ei": "rlthink.algorithms.expert_iteration:run_stage",
    "ppo": "rlthink.algorithms.ppo:run_stage",
    "grpo": "rlthink.algorithms.grpo:run_stage",
    "start": "rlthink.algorithms.start:run_stage",
    "rcrl": "rlthink.algorithms.rcrl:run_stage",
    "orm": "rlthink.rewards.training:run_orm_stage",
    "prm": "rlthink.rewards.training:run_prm_stage",
}


def check_stage(name: str) -> str:
  if name not in STAGES:
    raise ValueError(f"unknown algorithm {name!r}; expected one of {sorted(STAGES)}")
  return name


def stage_runner(name: str) -> Callable:
  module, function = STAGES[check_stage(name)].split(":")
  return getattr(importlib.import_module(module), function)
