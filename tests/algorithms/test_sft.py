"""SFT: the loss falls on the task's references, a crashed run resumes exactly, a finished phase
is restored without training, and bad input is refused up front."""

import json
import os

import jax
import numpy as np
import pytest

import rlthink
from rlthink import sharding, tasks
from rlthink.algorithms import sft
from rlthink.algorithms.sft import SFTConfig, run_sft
from rlthink.models import tokenizer as tokenizers
from rlthink.train import Checkpointer, OptimizerConfig

CFG = SFTConfig(steps=6, batch_size=8, max_length=96, log_every=1, checkpoint_every=2)
OPT = OptimizerConfig(learning_rate=3e-3)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return tasks.get("arithmetic", size="tiny", seed=0, num_train=96, num_test=8,
                   data_dir=str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def policy():
  tok = tokenizers.builtin_tokenizer()
  return rlthink.init_policy("tiny", seed=0, mesh=sharding.make_mesh(), num_layers=2,
                             tokenizer=tok, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)


@pytest.fixture(scope="module")
def uninterrupted(task, policy, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("sft_a"))
  trained, history = run_sft(policy, task, CFG, OPT, directory, progress=False)
  assert history == [{"iteration": 1, "train_steps": CFG.steps}]
  return directory, trained


def _logged(directory):
  with open(os.path.join(directory, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _assert_same_params(a, b):
  jax.tree_util.tree_map_with_path(
      lambda path, x, y: np.testing.assert_array_equal(
          np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path)), a, b)


def test_sft_lowers_the_loss_on_reference_completions(uninterrupted, policy):
  workdir, trained = uninterrupted
  logged = _logged(workdir)
  assert [r["step"] for r in logged] == list(range(1, CFG.steps + 1))
  assert logged[-1]["sft/loss"] < logged[0]["sft/loss"] - 1.0
  # Only completion tokens are targets: far fewer than the 8 x 96 positions of a batch.
  assert all(0 < r["sft/tokens"] < CFG.batch_size * 40 for r in logged)
  changed = jax.tree.map(lambda x, y: not np.array_equal(np.asarray(x), np.asarray(y)),
                         trained.params, policy.params)
  assert all(jax.tree.leaves(changed))  # every parameter was trained


class Crash(Exception):
  pass


def test_crashed_sft_resumes_to_the_same_params_and_metrics(uninterrupted, task, policy, tmp_path,
                                                            monkeypatch):
  workdir_a, trained = uninterrupted
  workdir = str(tmp_path)

  class CrashingCheckpointer(Checkpointer):
    def save(self, step, state, meta):
      super().save(step, state, meta)
      if step == 4:  # the process dies right after the step-4 checkpoint
        raise Crash()

  monkeypatch.setattr(sft, "Checkpointer", CrashingCheckpointer)
  with pytest.raises(Crash):
    run_sft(policy, task, CFG, OPT, workdir, progress=False)
  monkeypatch.undo()
  assert [r["step"] for r in _logged(workdir)] == [1, 2, 3, 4]
  resumed, _ = run_sft(policy, task, CFG, OPT, workdir, progress=False)
  _assert_same_params(resumed.params, trained.params)
  # Steps 5 and 6 saw the same batches (restored data iterator) and the same optimizer state.
  strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
  assert strip(_logged(workdir)) == strip(_logged(workdir_a))


def test_rerunning_a_finished_phase_restores_it_without_training(uninterrupted, task, policy):
  workdir, trained = uninterrupted
  lines = len(_logged(workdir))
  evaluated = []
  again, history = run_sft(policy, task, CFG, OPT, workdir, progress=False,
                           evaluate=lambda p, i, last: evaluated.append((i, last)) or {"acc": 1})
  _assert_same_params(again.params, trained.params)
  assert len(_logged(workdir)) == lines
  assert evaluated == [(1, True)] and history[0]["eval_acc"] == 1


def test_sft_refuses_bad_input(task, policy, tmp_path):
  with pytest.raises(ValueError, match="needs a policy with a tokenizer"):
    run_sft(policy.replace(tokenizer=None), task, CFG, OPT, str(tmp_path), progress=False)
  with pytest.raises(ValueError, match="unknown split 'validation'"):
    run_sft(policy, task, SFTConfig(split="validation"), OPT, str(tmp_path), progress=False)
  with pytest.raises(ValueError, match="steps, batch_size must be >= 1"):
    SFTConfig(steps=0)
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints", "1"))
