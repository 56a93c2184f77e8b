"""Soak: a tiny SFT -> GRPO run (`rlthink train --gin_file experiments/grpo_tiny.gin`, shrunk)
SIGKILLed at 10 moments drawn from a fixed seed (during start-up, while config.gin is written;
mid-stage; while orbax writes a checkpoint) and once resumed from a corrupted newest checkpoint
ends with exactly the results of an uninterrupted run (every number but wall-clock times)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import run_fixtures as rf

KILL_SEED = 20261205
KINDS = ("startup",) * 3 + ("after_checkpoint",) * 3 + ("checkpoint_write",) * 4
SHRINK = (
    "ModelSpec.overrides = {'num_layers': 1}",
    "OptimizerConfig.warmup_steps = 0",
    "SFTConfig.steps = 24",
    "SFTConfig.checkpoint_every = 4",
    "SFTConfig.log_every = 4",
    "GRPOConfig.iterations = 3",
    "GRPOConfig.prompts_per_iteration = 4",
    "GRPOConfig.samples_per_prompt = 4",
    "GRPOConfig.minibatch_size = 16",
    "GRPOConfig.num_questions = 32",
    "EvalConfig.max_examples = 8",
    "EvalConfig.k = 2",
)
STAGES = ("sft", "grpo")
TMP_SUFFIX = ".orbax-checkpoint-tmp"


def command(workdir, data_dir):
  argv = [sys.executable, "-m", "rlthink.cli", "train", "--gin_file", "experiments/grpo_tiny.gin",
          "--workdir", str(workdir), "--no_progress"]
  for param in SHRINK + (f"Experiment.data_dir = '{data_dir}'",):
    argv += ["--gin_param", param]
  return argv


def environment(tmp_path):
  return dict(rf.cli_env(), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


def entries(workdir):
  """{stage: names in <stage>/checkpoints} (finished steps are digit names)."""
  found = {}
  for stage in STAGES:
    try:
      found[stage] = set(os.listdir(os.path.join(workdir, stage, "checkpoints")))
    except FileNotFoundError:
      found[stage] = set()
  return found


def finished(names):
  return {n for n in names if n.isdigit()}


def kill_at(proc, workdir, kind, delay, timeout=300.0):
  """SIGKILLs `proc` at the moment `kind` names; returns what was hit, or None when the run ended
  first."""
  before = entries(workdir)
  start = time.monotonic()
  seen_new_checkpoint = None
  while time.monotonic() - start < timeout:
    if proc.poll() is not None:
      return None
    now = entries(workdir)
    if kind == "startup" and time.monotonic() - start >= delay:
      hit = "startup"
    elif kind == "checkpoint_write" and any(
        n.endswith(TMP_SUFFIX) for s in STAGES for n in now[s] - before[s]):
      hit = "checkpoint write"
    elif kind == "after_checkpoint" and any(finished(now[s] - before[s]) for s in STAGES):
      seen_new_checkpoint = seen_new_checkpoint or time.monotonic()
      hit = "after a checkpoint" if time.monotonic() - seen_new_checkpoint >= delay else None
    else:
      hit = None
    if hit:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      return hit
    time.sleep(0.003)
  os.kill(proc.pid, signal.SIGKILL)
  raise AssertionError(f"no {kind} moment in {timeout}s")


def corrupt_newest_checkpoint(workdir):
  """Flips 8 bytes of the newest checkpoint of a stage in progress that holds two (so there is a
  previous good one); returns the step directory, or None when no stage qualifies now."""
  for stage in STAGES:
    record = os.path.join(workdir, stage, "stage.json")
    if os.path.exists(record):
      with open(record) as f:
        if json.load(f).get("done"):
          continue
    steps = sorted(int(n) for n in finished(entries(workdir)[stage]))
    if len(steps) < 2:
      continue
    step_dir = os.path.join(workdir, stage, "checkpoints", str(steps[-1]))
    files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state"))
             for n in ns]
    target = max(files, key=os.path.getsize)
    with open(target, "r+b") as f:
      data = bytearray(f.read())
      middle = len(data) // 2
      data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
      f.seek(0)
      f.write(data)
    return step_dir
  return None


def without_times(value):
  if isinstance(value, dict):
    return {k: without_times(v) for k, v in value.items() if not k.startswith("time_")}
  if isinstance(value, list):
    return [without_times(v) for v in value]
  return value


def outcome(workdir):
  """results.json and eval/*.json, wall-clock times left out."""
  out = {"results": rf.read_results(str(workdir))}
  for name in sorted(os.listdir(os.path.join(workdir, "eval"))):
    if name.endswith(".json"):
      with open(os.path.join(workdir, "eval", name)) as f:
        out[name] = json.load(f)
  return without_times(out)


@pytest.mark.timeout(900)
def test_ten_kills_and_a_corrupt_checkpoint_resume_to_the_uninterrupted_results(tmp_path):
  env, data_dir = environment(tmp_path), tmp_path / "data"
  reference = tmp_path / "reference"
  with open(tmp_path / "reference.log", "wb") as log:
    done = subprocess.run(command(reference, data_dir), cwd=tmp_path, env=env, stdout=log,
                          stderr=subprocess.STDOUT, timeout=600)
  assert done.returncode == 0, rf.tail(str(tmp_path / "reference.log"))

  workdir, rng = tmp_path / "killed", np.random.default_rng(KILL_SEED)
  plan = [(kind, float(rng.uniform(0.5, 6.0) if kind == "startup" else rng.uniform(0.0, 1.5)))
          for kind in rng.permutation(KINDS)]
  hits, corrupted, log_path = [], None, tmp_path / "killed.log"
  for kind, delay in plan:
    with open(log_path, "ab") as log:
      log.write(f"\n=== launch: kill at {kind} ({delay:.2f}s)\n".encode())
      log.flush()
      proc = subprocess.Popen(command(workdir, data_dir), cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
      hit = kill_at(proc, workdir, kind, delay)
    assert hit is not None, f"the run finished before kill {len(hits) + 1} ({kind})"
    hits.append(hit)
    if corrupted is None and len(hits) >= 5:
      corrupted = corrupt_newest_checkpoint(workdir)
  assert len(hits) == 10 and {"startup", "after a checkpoint", "checkpoint write"} <= set(hits)
  assert corrupted is not None, "no stage in progress held two checkpoints to corrupt"

  with open(log_path, "ab") as log:
    log.write(b"\n=== launch: to the end\n")
    log.flush()
    last = subprocess.run(command(workdir, data_dir), cwd=tmp_path, env=env, stdout=log,
                          stderr=subprocess.STDOUT, timeout=600)
  text = rf.tail(str(log_path), 100_000)
  assert last.returncode == 0, rf.tail(str(log_path))
  assert f"checkpoint {corrupted}: file state/" in text and "falling back" in text, text[-3000:]
  assert os.path.isdir(corrupted + ".corrupt")  # kept aside for inspection
  assert outcome(workdir) == outcome(reference)
