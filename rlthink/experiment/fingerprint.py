"""What a stage was run with, recorded in `<workdir>/<stage>/stage.json`, so a resumed or re-run
experiment never silently reuses (or extends) a stage whose config has changed.

A fingerprint is a flat {binding: value} dict ("GRPOConfig.learning_rate": 1e-4, "stage.parent":
"sft", ...) with JSON values; the parent's fingerprint enters as its digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from rlthink.evaluation import report

RECORD = "stage.json"


def _plain(value):
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def flat(prefix: str, value) -> dict:
  """{prefix.field: value} of a dataclass or dict (one level: nested values stay whole)."""
  items = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)
  return {f"{prefix}.{k}": _plain(v) for k, v in items.items()}


def digest(fingerprint: dict) -> str:
  return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def read(directory: str) -> dict | None:
  path = os.path.join(directory, RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write(directory: str, record: dict) -> None:
  report.write_json(os.path.join(directory, RECORD), record)


def differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
  """(binding, saved value, current value) for every binding that differs."""
  missing = object()
  keys = sorted(set(saved) | set(current))
  return [(k, saved.get(k, missing), current.get(k, missing)) for k in keys
          if saved.get(k, missing) != current.get(k, missing)]


def check(stage: str, directory: str, saved: dict, current: dict, overrides) -> list[str]:
  """The differing bindings that `overrides` allow (a binding, or "<stage>.<binding>"); raises
  `StageChangedError` naming the others."""
  diffs = differences(saved, current)
  allowed = set(overrides)
  blocked = [d for d in diffs if d[0] not in allowed and f"{stage}.{d[0]}" not in allowed]
  if blocked:
    shown = "; ".join(f"{k}: {_show(old)} -> {_show(new)}" for k, old, new in blocked[:6])
    more = f" (and {len(blocked) - 6} more)" if len(blocked) > 6 else ""
    raise StageChangedError(
        f"stage {stage!r} in {directory} was run with other settings than the config gives now: "
        f"{shown}{more}. Start a new workdir, delete {directory} to re-run the stage, or pass "
        f"--override {blocked[0][0]} (repeatable) to continue it with the new values")
  return [d[0] for d in diffs]


def _show(value) -> str:
  return "(unset)" if not isinstance(value, (str, int, float, bool, list, dict, type(None))) \
      else repr(value)


class StageChangedError(ValueError):
  """A stage's recorded settings differ from the config's; the message names the bindings."""
