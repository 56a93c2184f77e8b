"""Seed sweeps: the whole experiment once per seed, each in `<sweep>/seed_<s>/`.

    rlthink sweep --gin_file experiments/x.gin --workdir runs/x --seeds 0 1 2
    rlthink sweep --workdir runs/x --processes 3 --devices 0      # resume, 3 processes, GPU 0
    rlthink report runs/x

With `processes=0` the seeds run one after another in this process (one compile for all); with
`processes=N` as N concurrent `rlthink train` subprocesses, spread round-robin over `devices`
(CUDA_VISIBLE_DEVICES; processes sharing a GPU split its memory). Every seed's run resumes like a
run, so running the sweep again continues each seed where it stopped. Files:
  sweep.gin    the sweep's config (every seed's run adds its `Experiment.seed`)
  sweep.json   {"seeds": [...], "runs": {seed: "seed_<s>"}}
  seed_<s>/    a run directory (and train.log when run as a subprocess)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Sequence

import gin

from rlthink import files
from rlthink.evaluation import report
from rlthink.experiment.runner import Experiment, run
from rlthink.train.checkpoint import ensure_writable

_log = logging.getLogger(__name__)
CONFIG, RECORD = "sweep.gin", "sweep.json"


def run_directory(sweep: str, seed: int) -> str:
  return os.path.join(sweep, f"seed_{seed}")


def read_record(sweep: str) -> dict | None:
  path = os.path.join(sweep, RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_seeds(seeds: Sequence[int]) -> list[int]:
  seeds = [int(s) for s in seeds]
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ValueError(f"sweep seeds {seeds} must be distinct non-negative ints, at least one")
  return seeds


def prepare(sweep: str, seeds: Sequence[int] | None) -> list[int]:
  """Writes sweep.gin (the parsed config) and sweep.json; returns the seeds (the recorded ones
  when none are given). A sweep directory keeps its seeds: asking for others is an error."""
  sweep = ensure_writable(sweep)
  record = read_record(sweep)
  if seeds is None:
    seeds = record["seeds"] if record else [0, 1, 2]
  seeds = check_seeds(seeds)
  if record and sorted(record["seeds"]) != sorted(seeds):
    extra = sorted(set(seeds) - set(record["seeds"]))
    if set(record["seeds"]) - set(seeds) or not extra:
      raise ValueError(f"the sweep in {sweep} runs seeds {record['seeds']}, not {seeds}; "
                       "use another directory (or add seeds: the recorded ones plus new ones)")
  files.atomic_write_text(os.path.join(sweep, CONFIG), gin.config_str())
  report.write_json(os.path.join(sweep, RECORD), {
      "seeds": seeds, "runs": {str(s): os.path.basename(run_directory(sweep, s)) for s in seeds}})
  return seeds


def run_sweep(sweep: str, seeds: Sequence[int] | None = None, processes: int = 0,
              devices: Sequence[str] = (), progress: bool = True, overrides=()) -> dict:
  """Runs (or resumes) every seed of the sweep; returns {seed: returncode or results}. Raises
  naming the failed seeds (after every other seed ran) when any failed."""
  seeds = prepare(sweep, seeds)
  if processes <= 0:
    return _in_process(sweep, seeds, progress, overrides)
  return _subprocesses(sweep, seeds, processes, list(devices), overrides)


def _in_process(sweep: str, seeds, progress: bool, overrides) -> dict:
  out = {}
  for i, seed in enumerate(seeds):
    print(f"sweep: seed {seed} ({i + 1}/{len(seeds)}) -> {run_directory(sweep, seed)}", flush=True)
    with gin.unlock_config():
      gin.bind_parameter("Experiment.seed", seed)
    out[seed] = run(run_directory(sweep, seed), dataclasses.replace(Experiment(), seed=seed),
                    progress=progress, overrides=overrides)
  return out


def _subprocesses(sweep: str, seeds, processes: int, devices: list[str], overrides) -> dict:
  per_device = -(-processes // max(1, len(devices)))
  queue, running, codes = list(enumerate(seeds)), {}, {}
  started = time.monotonic()
  while queue or running:
    while queue and len(running) < processes:
      slot, seed = queue.pop(0)
      directory = ensure_writable(run_directory(sweep, seed))
      env = dict(os.environ, PYTHONUNBUFFERED="1")
      if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / per_device:.3f}")
      command = [sys.executable, "-m", "rlthink.cli", "train", "--no_progress",
                 "--workdir", directory, "--gin_file", os.path.join(sweep, CONFIG),
                 "--gin_param", f"Experiment.seed = {seed}"]
      for binding in overrides:
        command += ["--override", binding]
      log = open(os.path.join(directory, "train.log"), "ab")
      running[seed] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env),
                       log)
      print(f"sweep: seed {seed} started (log: {directory}/train.log)", flush=True)
    time.sleep(1.0)
    for seed, (proc, log) in list(running.items()):
      if proc.poll() is not None:
        log.close()
        codes[seed] = proc.returncode
        del running[seed]
        state = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"sweep: seed {seed} {state} after {time.monotonic() - started:.0f}s; "
              f"{len(codes)}/{len(seeds)} done", flush=True)
  failed = sorted(s for s, c in codes.items() if c != 0)
  if failed:
    raise RuntimeError(f"sweep {sweep}: seeds {failed} failed; see "
                       + ", ".join(f"{run_directory(sweep, s)}/train.log" for s in failed)
                       + " (run the sweep again to resume them)")
  return codes
