"""Metrics to TensorBoard event files, a JSONL file, a live progress bar with ETA (on a terminal)
or periodic plain log lines (with --no_progress or no terminal), and optionally Weights & Biases.

Only process 0 writes (multi-host runs share the workdir)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import time
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
  """Where metrics go besides metrics.jsonl and TensorBoard (gin: `LoggingConfig.x = ...`).

  line_every_s: seconds between plain log lines when there is no progress bar (--no_progress or
    no terminal); the first and last step of each phase always get one.
  wandb_project: a Weights & Biases project to log to as well (None: off; needs the `wandb`
    extra, `pip install 'rlthink[wandb]'`). wandb_entity / wandb_group: its entity and run group.
    Each stage directory is one W&B run (id from its path, so a resumed stage continues it).
  """

  line_every_s: float = 30.0
  wandb_project: str | None = None
  wandb_entity: str | None = None
  wandb_group: str | None = None

  def __post_init__(self):
    if not self.line_every_s >= 0:
      raise ValueError(f"LoggingConfig.line_every_s={self.line_every_s}: expected >= 0")


# The LoggingConfig of the loggers made inside `using(...)` that are given none (the experiment
# runner sets it once, at the edge, from gin).
_ACTIVE: list[LoggingConfig] = []


@contextlib.contextmanager
def using(config: LoggingConfig):
  """MetricsLoggers made in this block without a `config` use `config`. Checks first that wandb
  is importable when `config` asks for it (so a missing package fails before any compute)."""
  if config.wandb_project:
    _import_wandb()
  _ACTIVE.append(config)
  try:
    yield config
  finally:
    _ACTIVE.pop()


def _import_wandb():
  try:
    return importlib.import_module("wandb")
  except ImportError:
    raise ValueError("LoggingConfig.wandb_project is set but wandb is not installed: "
                     "pip install 'rlthink[wandb]' (or unset LoggingConfig.wandb_project)") from None


class MetricsLogger:
  """`log(step, {name: scalar})` appends to `<workdir>/metrics.jsonl`, writes TensorBoard scalars
  under `<workdir>/tb` (and to Weights & Biases when `config.wandb_project` is set) and updates a
  tqdm bar (`advance` moves it). Without a bar (`progress=False` or stderr not a terminal),
  `report(step, end)` prints a plain line every `config.line_every_s` seconds on the
  "rlthink.train" logger: `sft step 40/300 | loss 1.234 | reward 0.41 | lr 3.0e-03 |
  5.1k tok/s | 0.21 s/step | ETA 0:00:54`.

  A resumed run repeats the steps between its last checkpoint and the kill; a record whose step
  and metric names are already in metrics.jsonl is not written again (resumes are exact, so it
  holds the same values), and the file keeps one line per step and kind of record.
  """

  def __init__(self, workdir: str, total: int | None = None, desc: str = "train",
               initial: int = 0, progress: bool = True, config: LoggingConfig | None = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.config = config or (_ACTIVE[-1] if _ACTIVE else LoggingConfig())
    self.total, self.desc = total, desc
    self._tb = self._bar = self._wandb = None
    self._window = {"time": time.perf_counter(), "step": None, "tokens": 0.0, "values": {}}
    self._last_line = None  # (time, step) of the last plain line
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
    # tensorboardX is absent on the accelerator images, where the benchmarks import this module
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    if progress and _interactive():
      self._bar = _bar_class()(total=total, initial=initial, desc=desc, dynamic_ncols=True)
    if self.config.wandb_project:
      self._wandb = _import_wandb()
      directory = os.path.abspath(workdir)
      self._wandb_run = self._wandb.init(
          project=self.config.wandb_project, entity=self.config.wandb_entity,
          group=self.config.wandb_group or os.path.basename(os.path.dirname(directory)),
          name=os.path.basename(directory), dir=directory, resume="allow", reinit=True,
          id=hashlib.sha1(directory.encode()).hexdigest()[:16])

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
      if self._wandb is not None:  # new records only: W&B steps must not go back on a resume
        self._wandb_run.log(values, step=int(step))
    if self._window["step"] is None:  # the first record: the rates count from the step before
      self._window["step"] = int(step) - 1
    self._window["values"].update(values)
    self._window["tokens"] += sum(v for k, v in values.items() if k.endswith("tokens"))
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))
    if self._bar is not None:
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:4]}, refresh=False)
    return values

  def report(self, step: int, end: int | None = None,
             learning_rate: float | Callable[[], float] | None = None,
             force: bool = False) -> str | None:
    """Without a progress bar, logs (and returns) one plain line for train step `step` of a phase
    ending at step `end` (the ETA's target; default `total`), at most every
    `config.line_every_s` seconds, but always at the phase's first report, at its end and when
    `force`. The rates cover the steps since the last line."""
    if not self.enabled or self._bar is not None:
      return None
    now, end = time.perf_counter(), end if end is not None else self.total
    window = self._window
    due = (force or self._last_line is None or step == end
           or now - self._last_line[0] >= self.config.line_every_s)
    if window["step"] is None or step < window["step"]:  # nothing logged, or a new phase
      window["step"], due = step - 1, True
    if not due or step <= window["step"]:
      return None
    steps, elapsed = step - window["step"], max(now - window["time"], 1e-9)
    values = window["values"]
    parts = [f"{self.desc} step {step}" + (f"/{end}" if end else "")]
    parts += [f"{_short(k)} {v:.4g}" for k, v in values.items()
              if _short(k) == "loss" or _short(k) in ("reward", "reward_mean")]
    if callable(learning_rate):  # read only when a line is due
      learning_rate = learning_rate()
    if learning_rate is not None:
      parts.append(f"lr {learning_rate:.2e}")
    if window["tokens"]:
      parts.append(f"{_si(window['tokens'] / elapsed)} tok/s")
    parts.append(f"{elapsed / steps:.3g} s/step")
    if end and end > step:
      parts.append(f"ETA {_duration((end - step) * elapsed / steps)}")
    line = " | ".join(parts)
    logging.getLogger("rlthink.train").info(line)
    self._window = {"time": now, "step": step, "tokens": 0.0, "values": {}}
    self._last_line = (now, step)
    return line

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
    if self._wandb is not None:
      self._wandb_run.finish()


def _record_key(step, record: dict) -> tuple:
  return step, frozenset(k for k in record if k != "time")


def _interactive() -> bool:
  """A live bar only where one renders: a terminal, or a notebook (`_bar_class`)."""
  return sys.stderr.isatty() or _in_notebook()


def _bar_class():
  """tqdm's widget bar in a notebook that has ipywidgets, else its text bar (tqdm.auto would warn
  in every notebook without ipywidgets, then fall back to the same text bar)."""
  if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.notebook import tqdm as widget_bar  # imports ipywidgets: only where it renders
    return widget_bar
  return tqdm


def _in_notebook() -> bool:
  """Whether this process is a Jupyter kernel (having imported ipykernel is not enough: a test
  or tool may import it without running in one)."""
  shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
  return type(shell).__name__ == "ZMQInteractiveShell"


def _short(name: str) -> str:
  """'ei/train_loss' -> 'loss', 'ppo/reward_mean' -> 'reward_mean'."""
  return name.rsplit("/", 1)[-1].removeprefix("train_")


def _si(value: float) -> str:
  for unit, scale in (("M", 1e6), ("k", 1e3)):
    if value >= scale:
      return f"{value / scale:.3g}{unit}"
  return f"{value:.3g}"


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
