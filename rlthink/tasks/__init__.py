"""Task families: TFDS-built datasets with prompt formats and verifiers.

    task = rlthink.tasks.get("arithmetic", size="tiny", seed=0)
    example = task.examples("train")[0]
    task.prompt(example), task.reference(example), task.verify(completion_text, example)

`FAMILIES` maps a task name to the module that implements it; the module is imported on first use
and must expose `make_task(**options) -> Task` (see `rlthink.tasks.base`). `register` adds a name.
"""

from __future__ import annotations

import importlib

from rlthink.tasks.base import PromptFormat, Task

FAMILIES: dict[str, str] = {
    "arithmetic": "rlthink.tasks.arithmetic",
    "gsm8k": "rlthink.tasks.gsm8k",
    "svamp": "rlthink.tasks.svamp",
    "general_qa": "rlthink.tasks.general_qa",
    "complementary_reasoning": "rlthink.tasks.complementary_reasoning",
    "latent_generalization": "rlthink.tasks.latent_generalization",
    "generic": "rlthink.tasks.generic",
}


def register(name: str, module: str) -> None:
  """Makes `get(name)` import `module` and call its `make_task` (for families outside rlthink)."""
  FAMILIES[name] = module


def names() -> list[str]:
  """The registered task names."""
  return sorted(FAMILIES)


def get(name: str, **options) -> Task:
  """The task `name` with `options` (family options, plus `data_dir` and `prompt_format`).

  Raises ValueError naming the task or option when either is unknown.
  """
  if name not in FAMILIES:
    raise ValueError(f"unknown task {name!r}; expected one of {names()}")
  module = importlib.import_module(FAMILIES[name])
  return module.make_task(**options)


__all__ = ["FAMILIES", "PromptFormat", "Task", "get", "names", "register"]
