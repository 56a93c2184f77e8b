"""The tiny end-to-end run shared by the CLI, experiment, SFT and Expert Iteration tests.

`shared_run(tmp_path_factory)` runs `python -m rlthink.cli train` once per pytest session (SFT
then two rounds of Expert Iteration of a 2-layer tiny model on tiny arithmetic, on CPU) into
the session's base temp dir and returns the workdir; later calls (from any test module) reuse it.
`TINY_PARAMS` are its gin bindings: pass them to any command that must rebuild the same model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL_PARAMS = ("ModelSpec.preset = 'tiny'", "ModelSpec.overrides = {'num_layers': 2}")
TINY_PARAMS = MODEL_PARAMS + (
    "Experiment.task = 'arithmetic'",
    "Experiment.task_options = {'size': 'tiny', 'seed': 0}",
    "Experiment.stages = ('sft', 'ei')",
    "Experiment.tokenizer = 'builtin'",
    # No warm-up: an EI round is only a few steps, and each round gets a fresh optimizer state.
    "OptimizerConfig.learning_rate = 3e-3",
    "OptimizerConfig.warmup_steps = 0",
    "OptimizerConfig.schedule = 'constant'",
    "SFTConfig.steps = 40",
    "SFTConfig.batch_size = 32",
    "SFTConfig.max_length = 96",
    "SFTConfig.log_every = 10",
    "SFTConfig.checkpoint_every = 20",
    "EIConfig.iterations = 2",
    "EIConfig.samples_per_question = 8",
    "EIConfig.num_questions = 96",
    "EIConfig.max_new_tokens = 24",
    "EIConfig.batch_size = 16",
    "EIConfig.max_length = 96",
    "EIConfig.epochs = 4.0",
    "EIConfig.max_steps_per_iteration = 16",
    "EIConfig.log_every = 4",
    "EIConfig.checkpoint_every = 2",  # a round of 4 steps still has a mid-round checkpoint
    "EIConfig.reset_each_iteration = False",
    "EIConfig.learning_rate = 1e-3",
    "EvalConfig.k = 4",
    "EvalConfig.max_examples = 16",
    "EvalConfig.max_new_tokens = 24",
    "EvalConfig.splits = ('test',)",
)

_cache: dict[str, object] = {}


def gin_args(params: Sequence[str] = TINY_PARAMS) -> list[str]:
  """`--gin_file models/tiny.gin --gin_param ...` for the CLI (not the quickstart file, which the
  lead tunes: these tests pin every setting they depend on)."""
  args = ["--gin_file", "models/tiny.gin"]
  for p in params:
    args += ["--gin_param", p]
  return args


def cli_env() -> dict:
  """The environment of CLI subprocesses: CPU, the same forced device count as the test process,
  and (once the shared run started) one persistent XLA compilation cache, so later runs of the
  same programs load them instead of compiling again (same executables, same numbers)."""
  env = dict(os.environ)
  env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  env.pop("RLTHINK_DEBUG", None)
  if "jax_cache" in _cache:
    env.update(JAX_COMPILATION_CACHE_DIR=_cache["jax_cache"],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return env


def train_command(workdir: str, params: Sequence[str] = TINY_PARAMS) -> list[str]:
  return [sys.executable, "-m", "rlthink.cli", "train", "--workdir", str(workdir),
          "--no_progress", *gin_args(params)]


def run_train(workdir: str, log_path: str, params: Sequence[str] = TINY_PARAMS,
              timeout: float = 900) -> None:
  """Runs `rlthink train` to completion; raises with the log's tail on failure."""
  with open(log_path, "ab") as log:
    proc = subprocess.run(train_command(workdir, params), cwd=os.path.dirname(str(workdir)),
                          env=cli_env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"rlthink train exited with {proc.returncode}:\n{tail(log_path)}")


def tail(path: str, lines: int = 40) -> str:
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-lines:])


def shared_run(tmp_path_factory) -> str:
  """The workdir of the session's tiny SFT -> EI run (run on first use)."""
  if "error" in _cache:
    raise AssertionError(f"the shared tiny run failed earlier: {_cache['error']}")
  if "workdir" not in _cache:
    workdir = tmp_path_factory.getbasetemp() / "rlthink_shared_run" / "workdir"
    workdir.parent.mkdir(parents=True, exist_ok=True)
    _cache["jax_cache"] = str(workdir.parent / "jax_cache")
    if not (workdir / "results.json").exists():
      try:
        run_train(str(workdir), str(workdir.parent / "train.log"))
      except Exception as e:  # remembered so later tests fail fast with the cause
        _cache["error"] = str(e)
        raise
    _cache["workdir"] = str(workdir)
  return str(_cache["workdir"])


def read_results(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def checkpoint_metas(phase_dir: str) -> dict[int, dict]:
  """{checkpoint id: meta} of the finished checkpoints under `<phase_dir>/checkpoints` (orbax
  writes a temporary directory and renames it, so a digit-named directory is complete)."""
  directory = os.path.join(phase_dir, "checkpoints")
  metas = {}
  if not os.path.isdir(directory):
    return metas
  for name in os.listdir(directory):
    if not name.isdigit():
      continue
    try:
      with open(os.path.join(directory, name, "meta", "metadata")) as f:
        metas[int(name)] = json.load(f)
    except (OSError, ValueError):  # removed by max_to_keep while we read it
      continue
  return metas


def snapshot(directory: str) -> dict[str, bytes]:
  """{relative path: bytes} of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files
