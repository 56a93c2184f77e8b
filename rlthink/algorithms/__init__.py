"""Algorithms: each module holds its loss (a pure function) and its driver.

`STAGES` maps the names an experiment may list to their drivers; `check_stage` validates a name.
"""

from __future__ import annotations

STAGES = ("sft", "ei")


def check_stage(name: str) -> str:
  if name not in STAGES:
    raise ValueError(f"unknown algorithm {name!r}; expected one of {STAGES}")
  return name
