"""The tiny RL set-up shared by the algorithm tests: the tiny arithmetic task, a 2-layer model with
the character tokenizer, and a short SFT start.

`sft_start(base)` runs SFT once per pytest session: its directory lies under the session's base
temp dir, and `run_sft` restores a finished run, so the second test file (or a driver
subprocess, `driver_script`) gets the same parameters without training again. Every driver has
the signature `run_x(policy, task, cfg, optimizer_cfg, directory, **kwargs) -> (result, history)`.
`make_rollouts` lays given token rows out as the sampler would.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np

import rlthink
from rlthink import tasks
from rlthink.algorithms.sft import SFTConfig, run_sft
from rlthink.models import tokenizer as tokenizers
from rlthink.sampling.rollouts import Rollouts
from rlthink.train import OptimizerConfig

TASK_OPTIONS = {"size": "tiny", "seed": 0, "max_steps": 1}
SFT_STEPS = 120


def tiny_policy():
  tok = tokenizers.builtin_tokenizer()
  return rlthink.init_policy("tiny", seed=0, num_layers=2, vocab_size=128, max_seq_len=256,
                             tokenizer=tok, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)


def sft_start(base: str):
  """(policy after a short SFT on tiny arithmetic, task); deterministic, cached under `base`."""
  task = tasks.get("arithmetic", data_dir=os.path.join(base, "data"), **TASK_OPTIONS)
  cfg = SFTConfig(steps=SFT_STEPS, batch_size=32, max_length=64, log_every=SFT_STEPS,
                  checkpoint_every=SFT_STEPS)
  policy, _ = run_sft(tiny_policy(), task, cfg,
                      OptimizerConfig(learning_rate=3e-3, warmup_steps=10),
                      os.path.join(base, "sft_start"), progress=False)
  return policy, task


def session_base(tmp_path_factory) -> str:
  base = tmp_path_factory.getbasetemp() / "rl_sft_start"
  base.mkdir(exist_ok=True)
  return str(base)


def driver_script(base: str, directory: str, module: str, runner: str, config_class: str,
                  config: dict, optimizer: dict) -> str:
  """Python source that runs `module.runner(policy, task, config_class(**config), ...)` in
  `directory` from the SFT start in `base` (for SIGKILL tests, run in a subprocess)."""
  return textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
      import rl_fixtures
      from {module} import {runner}, {config_class}
      from rlthink.train import OptimizerConfig
      policy, task = rl_fixtures.sft_start({base!r})
      {runner}(policy, task, {config_class}(**{config!r}), OptimizerConfig(**{optimizer!r}),
               {directory!r}, progress=False)
      """)


def start_driver(source: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", source], env=dict(os.environ),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_after_checkpoint(proc: subprocess.Popen, directory: str, timeout: float = 900) -> None:
  """Kills `proc` (SIGKILL) as soon as the checkpoint `directory` is committed."""
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    if os.path.exists(os.path.join(directory, "commit_success.txt")):
      proc.kill()
      break
    time.sleep(0.05)
  else:
    if proc.poll() is None:
      proc.kill()
  proc.wait()


def saved_tree(directory: str, step: int):
  """The raw checkpointed tree and JSON meta of the run in `directory` at `step` (numpy
  leaves)."""
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.join(directory, "checkpoints"))
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                      meta=ocp.args.JsonRestore()))
  manager.close()
  return out["state"], out["meta"]


def full_and_killed_runs(tmp_path_factory, stage: str, runner: str, config_class: str,
                         run: dict, optimizer: dict, kill_after: int) -> dict:
  """An uninterrupted run of `rlthink.algorithms.<stage>.<runner>` from the SFT start, and
  (concurrently, in a subprocess) the same run killed (SIGKILL) as soon as its checkpoint
  `kill_after` is committed; the killed run's directory is left for the test to resume.

  Returns {policy, task, final, history, full_dir, killed_dir, returncode, stderr}.
  """
  module = importlib.import_module(f"rlthink.algorithms.{stage}")
  base = session_base(tmp_path_factory)
  policy, task = sft_start(base)
  root = tmp_path_factory.mktemp(stage)
  full_dir, killed_dir = str(root / "full"), str(root / "killed")
  proc = start_driver(driver_script(base, killed_dir, module.__name__, runner, config_class, run,
                                    optimizer))
  watcher = threading.Thread(target=kill_after_checkpoint, args=(
      proc, os.path.join(killed_dir, "checkpoints", str(kill_after))))
  watcher.start()
  try:
    final, history = getattr(module, runner)(policy, task, getattr(module, config_class)(**run),
                                             OptimizerConfig(**optimizer), full_dir,
                                             progress=False)
  finally:
    watcher.join()
  stderr = proc.stderr.read()
  proc.stderr.close()
  return dict(policy=policy, task=task, final=final, history=history, full_dir=full_dir,
              killed_dir=killed_dir, returncode=proc.returncode, stderr=stderr)


def make_rollouts(pairs, pad_id=0):
  """`Rollouts` holding the given (prompt ids, completion ids) rows, laid out like the sampler's."""
  p = max(len(a) for a, _ in pairs)
  c = max(len(b) for _, b in pairs)
  n = len(pairs)
  prompt, completion = np.full((n, p), pad_id, np.int32), np.full((n, c), pad_id, np.int32)
  for r, (a, b) in enumerate(pairs):
    prompt[r, p - len(a):], completion[r, :len(b)] = a, b
  lengths = np.asarray([len(b) for _, b in pairs], np.int32)
  return Rollouts(prompt_tokens=prompt, prompt_mask=np.arange(p)[None] >= p - np.asarray(
      [len(a) for a, _ in pairs])[:, None], completion_tokens=completion,
      completion_mask=np.arange(c)[None] < lengths[:, None], logprobs=np.zeros((n, c), np.float32),
      sampling_logprobs=np.zeros((n, c), np.float32), lengths=lengths,
      stopped=np.ones(n, bool), prompt_index=np.arange(n, dtype=np.int32),
      decode_steps=np.asarray(c, np.int32))


def assert_same_update(auto, forward, start, auto_record: dict, forward_record: dict,
                       drift_bound: float) -> None:
  """An on-policy update with old_logprobs='auto' (no scoring forward) equals the one with
  'forward': the same params (well within the size of the update) and the same drift metrics."""
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8),
               auto.params, forward.params)
  moved = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(
      jax.tree.leaves(auto.params), jax.tree.leaves(start.params)))
  assert moved > 1e-5  # the tolerance above is well below the update
  for key in ("logprob_drift_mean", "logprob_drift_max"):
    a, f = auto_record[key], forward_record[key]
    assert 0 <= a < drift_bound and abs(a - f) <= 1e-5, (key, a, f)
