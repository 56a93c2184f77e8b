"""A real three-arm experiment on CPU: one SFT parent, Expert Iteration, GRPO and RCRL children.
The parent trains once and every child starts from its final params; an experiment SIGKILLed
during the parent, during a child and during a checkpoint write resumes to the same final table
as the uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import time

import gin
import jax
import numpy as np
import pytest

import run_fixtures as rf
from rlthink import algorithms, gin_utils
from rlthink.experiment import load_stage_params, runner

ARMS = list(rf.MODEL_PARAMS) + [
    "Experiment.task = 'arithmetic'",
    "Experiment.task_options = {'size': 'tiny', 'seed': 0}",
    "Experiment.tokenizer = 'builtin'",
    "Experiment.stages = [{'name': 'sft', 'algorithm': 'sft'},"
    " {'name': 'ei', 'algorithm': 'ei', 'parent': 'sft'},"
    " {'name': 'grpo', 'algorithm': 'grpo', 'parent': 'sft'},"
    " {'name': 'rcrl', 'algorithm': 'rcrl', 'parent': 'sft'}]",
    "OptimizerConfig.learning_rate = 3e-3", "OptimizerConfig.warmup_steps = 0",
    "OptimizerConfig.schedule = 'constant'",
    "SFTConfig.steps = 12", "SFTConfig.batch_size = 16", "SFTConfig.max_length = 96",
    "SFTConfig.log_every = 3", "SFTConfig.checkpoint_every = 4",
    "EIConfig.iterations = 1", "EIConfig.samples_per_question = 2",
    "EIConfig.num_questions = 16", "EIConfig.max_new_tokens = 16", "EIConfig.batch_size = 8",
    "EIConfig.max_length = 96", "EIConfig.max_steps_per_iteration = 3",
    # 12 SFT steps rarely solve a question: keep every finished sample (the test is about the
    # stage graph and resume, not about what EI learns).
    "EIConfig.min_reward = 0.0",
    "GRPOConfig.iterations = 2", "GRPOConfig.prompts_per_iteration = 4",
    "GRPOConfig.samples_per_prompt = 2", "GRPOConfig.max_new_tokens = 16",
    "RCRLConfig.iterations = 1", "RCRLConfig.samples_per_question = 2",
    "RCRLConfig.num_questions = 16", "RCRLConfig.max_new_tokens = 16",
    "RCRLConfig.batch_size = 8", "RCRLConfig.max_length = 96",
    "RCRLConfig.max_steps_per_iteration = 3",
    "rcrl/EvalConfig.condition = 'rcrl'",
    "EvalConfig.k = 2", "EvalConfig.max_examples = 6", "EvalConfig.max_new_tokens = 16",
    "EvalConfig.splits = ('test',)",
]


def _sft_steps_logged(workdir):
  with open(os.path.join(workdir, "sft", "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f if '"sft/loss"' in line]


@pytest.mark.slow
def test_parent_trains_once_and_children_start_from_its_final_params(tmp_path, monkeypatch):
  gin_utils.parse(["models/tiny.gin"], ARMS)
  starts, real_get = {}, algorithms.get

  def spying_get(name):
    algorithm = real_get(name)
    run = algorithm.runner()

    def spy(policy, cfg, ctx):
      starts[ctx.name] = jax.tree.map(np.asarray, policy.params)
      return run(policy, cfg, ctx)
    return _Wrapped(algorithm, spy)

  monkeypatch.setattr(algorithms, "get", spying_get)
  try:
    results = runner.run(str(tmp_path), progress=False)
    assert sorted(starts) == ["ei", "grpo", "rcrl", "sft"]
    assert _sft_steps_logged(str(tmp_path)) == list(range(1, 13))  # 12 steps, each once
    policy = runner.attach_tokenizer(runner.build_policy(), "builtin")
    parent = jax.tree.map(np.asarray, load_stage_params(str(tmp_path), "sft", policy))
    for child in ("ei", "grpo", "rcrl"):
      jax.tree.map(np.testing.assert_array_equal, starts[child], parent)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(parent),
                                                      jax.tree.leaves(starts["sft"])))
    assert sorted(results) == ["ei", "grpo", "rcrl", "sft"]
    starts.clear()
    gin_utils.parse(["models/tiny.gin"], ARMS)
    assert runner.run(str(tmp_path), progress=False) == results  # resumed: nothing runs again
    assert starts == {} and _sft_steps_logged(str(tmp_path)) == list(range(1, 13))
  finally:
    gin.clear_config()


class _Wrapped:
  def __init__(self, algorithm, run):
    self._algorithm, self._run = algorithm, run

  def config_class(self):
    return self._algorithm.config_class()

  def runner(self):
    return self._run


def _untimed(history):
  """A stage's history without its wall-clock fields (time_*), which no two runs share."""
  return [{k: v for k, v in record.items() if not k.startswith("time_")} for record in history]


def _kill_when(proc, ready, log, timeout=900):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if ready():
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      return
    if proc.poll() is not None:
      raise AssertionError(f"the run ended ({proc.returncode}) before the kill:\n{rf.tail(log)}")
    time.sleep(0.01)
  raise AssertionError(f"no kill point in {timeout}s:\n{rf.tail(log)}")


def _checkpoints(workdir, stage):
  directory = os.path.join(workdir, stage, "checkpoints")
  return os.listdir(directory) if os.path.isdir(directory) else []


def _writing(workdir):
  """A checkpoint being written: orbax's temporary directory exists under some stage."""
  return any("tmp" in name for stage in ("sft", "ei", "grpo", "rcrl")
             for name in _checkpoints(workdir, stage))


@pytest.mark.slow
def test_kills_during_parent_child_and_checkpoint_write_resume_to_the_same_table(tmp_path):
  reference, workdir = str(tmp_path / "reference"), str(tmp_path / "killed")
  log = str(tmp_path / "train.log")
  rf.run_train(reference, log, ARMS)
  rng = random.Random(0)
  kill_points = [
      lambda: any(n.isdigit() for n in _checkpoints(workdir, "sft")),   # during the parent
      lambda: _writing(workdir),                                       # during a checkpoint write
      lambda: any(n.isdigit() for n in _checkpoints(workdir, "grpo")),  # during a child
  ]
  for ready in kill_points:
    with open(log, "ab") as out:
      proc = subprocess.Popen(rf.train_command(workdir, ARMS), cwd=str(tmp_path),
                              env=rf.cli_env(), stdout=out, stderr=subprocess.STDOUT)
    time.sleep(rng.uniform(0.0, 0.5))
    _kill_when(proc, ready, log)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
  rf.run_train(workdir, log, ARMS)
  got, want = rf.read_results(workdir), rf.read_results(reference)
  for stage in ("sft", "ei", "grpo", "rcrl"):
    assert got["stages"][stage]["results"] == want["stages"][stage]["results"], stage
    assert _untimed(got["stages"][stage]["history"]) == \
        _untimed(want["stages"][stage]["history"]), stage
  with open(os.path.join(workdir, "results.md")) as f, \
       open(os.path.join(reference, "results.md")) as g:
    assert f.read() == g.read()
