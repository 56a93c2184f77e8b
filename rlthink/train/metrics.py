"""Metrics to TensorBoard event files, a JSONL file and a live progress bar with ETA.

Only process 0 writes (multi-host runs share the workdir)."""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np


class MetricsLogger:
  """`log(step, {name: scalar})` appends to `<workdir>/metrics.jsonl`, writes TensorBoard scalars
  under `<workdir>/tb` and updates a tqdm bar (`advance` moves it).

  A resumed run repeats the steps between its last checkpoint and the kill; a record whose step
  and metric names are already in metrics.jsonl is not written again (resumes are exact, so it
  holds the same values), and the file keeps one line per step and kind of record.
  """

  def __init__(self, workdir: str, total: int | None = None, desc: str = "train",
               initial: int = 0, progress: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = self._bar = None
    if not self.enabled:
      return
    self._logged = set()  # (step, metric names) already in the file
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except ValueError:  # a line cut by the kill
            continue
          self._logged.add(_record_key(record.pop("step", None), record))
      with open(self.path, "rb+") as f:  # a line cut by a kill ends here: start a fresh one
        if f.seek(0, os.SEEK_END) > 0:
          f.seek(-1, os.SEEK_END)
          if f.read(1) != b"\n":
            f.write(b"\n")
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    if progress:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

  def log(self, step: int, metrics: dict, prefix: str = "") -> dict:
    """Writes scalar metrics for `step`; returns them as plain floats."""
    values = {f"{prefix}{k}": float(np.asarray(v)) for k, v in metrics.items()}
    if not self.enabled:
      return values
    key = _record_key(int(step), values)
    if key not in self._logged:
      self._logged.add(key)
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), "time": time.time(), **{
            k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}) + "\n")
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))
    if self._bar is not None:
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:4]}, refresh=False)
    return values

  def advance(self, n: int = 1, desc: str | None = None) -> None:
    if self._bar is not None:
      if desc:
        self._bar.set_description(desc, refresh=False)
      self._bar.update(n)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
    if self._bar is not None:
      self._bar.close()


def _record_key(step, record: dict) -> tuple:
  return step, frozenset(k for k in record if k != "time")
