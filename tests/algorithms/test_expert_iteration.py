"""Expert Iteration: it raises the training-split solve rate over its SFT start, its dataset holds
only correct, de-duplicated solutions accumulated over rounds, and bad input fails clearly.

The end-to-end checks read the session's shared tiny run (SFT 40 steps, then 2 EI rounds of 96
questions x 8 samples, continuing from the current model; see tests/run_fixtures.py).
"""

import json
import math
import os
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import run_fixtures as rf  # noqa: E402

import rlthink  # noqa: E402
from rlthink import sharding, tasks  # noqa: E402
from rlthink.algorithms.expert_iteration import (EIConfig, is_solution,  # noqa: E402
                                                 run_expert_iteration, solution_key)
from rlthink.algorithms.rcrl import RCRLConfig  # noqa: E402
from rlthink.models import tokenizer as tokenizers  # noqa: E402
from rlthink.tasks.pipeline import encode_prompt  # noqa: E402
from rlthink.train import OptimizerConfig  # noqa: E402

NUM_QUESTIONS, SAMPLES = 96, 8  # as bound in run_fixtures.TINY_PARAMS


def _shared(tmp_path_factory):
  workdir = rf.shared_run(tmp_path_factory)
  history = rf.read_results(workdir)["stages"]["ei"]["history"]
  meta = max(rf.checkpoint_metas(os.path.join(workdir, "ei")).items())[1]
  task = tasks.get("arithmetic", size="tiny", seed=0, data_dir=os.path.join(workdir, "data"))
  return workdir, history, meta, task


def test_ei_raises_the_training_solve_rate_over_its_sft_start(tmp_path_factory):
  _, history, _, _ = _shared(tmp_path_factory)
  assert [h["iteration"] for h in history] == [1, 2]
  # Round 1 samples from the SFT model before any EI training: its solve rate is the start.
  start, end = history[0], history[-1]
  assert 0 < start["solve_rate"] < 0.5
  assert end["solve_rate"] >= start["solve_rate"] + 0.08, history
  assert end["sample_accuracy"] > start["sample_accuracy"], history


def test_dataset_accumulates_unique_correct_solutions(tmp_path_factory):
  _, history, meta, task = _shared(tmp_path_factory)
  tokenizer = tokenizers.builtin_tokenizer()
  train = task.examples("train")
  by_prompt = {}
  for i in range(NUM_QUESTIONS):
    by_prompt[tuple(int(t) for t in encode_prompt(task, train[i], tokenizer))] = train[i]
  dataset = meta["dataset"]
  assert len(dataset) == history[-1]["dataset_size"] == len(meta["keys"])
  operation_sequences = set()
  for prompt, completion in dataset:
    example = by_prompt[tuple(prompt)]  # only the round's training questions
    text = tokenizer.decode(completion, skip_special_tokens=True)
    assert task.verify(text, example) == 1.0, text
    assert completion[-1] == tokenizer.eos_token_id  # finished solutions, eos included
    key = (example["id"], task.operations(text))
    assert key not in operation_sequences, f"duplicate solution {key}"
    operation_sequences.add(key)
  # D_i = R_i U D_{i-1}: each round adds its new unique solutions to the previous ones.
  assert [h["dataset_size"] for h in history] == list(np.cumsum([h["new_unique"]
                                                                 for h in history]))
  for h in history:
    # kept: the verified samples that also finished (ended with eos), before de-duplication.
    assert h["new_unique"] <= h["kept"] <= round(h["sample_accuracy"] * NUM_QUESTIONS * SAMPLES)
    assert h["train_steps"] == min(math.ceil(4.0 * h["dataset_size"] / 16), 16)
    assert np.isfinite(h["train_loss"])
    assert {"eval_maj@1", "eval_maj@4", "eval_pass@4"} <= set(h)  # per-round evaluation
    assert h["samples"] == NUM_QUESTIONS * SAMPLES


def test_rounds_log_one_continuous_train_step_axis(tmp_path_factory):
  """metrics.jsonl (like TensorBoard) counts train steps across rounds: round 2's first step is
  round 1's last + 1; a round's sampling record sits at the step its round starts from."""
  workdir, history, meta, _ = _shared(tmp_path_factory)
  with open(os.path.join(workdir, "ei", "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  total = sum(h["train_steps"] for h in history)
  assert [r["step"] for r in records if "ei/train_loss" in r] == list(range(1, total + 1))
  starts = [r["step"] for r in records if "ei/solve_rate" in r]
  assert starts == [0, history[0]["train_steps"]]
  assert meta["step_offset"] == total


def test_solution_key_modes(tmp_path):
  task = tasks.get("arithmetic", size="tiny", seed=0, data_dir=str(tmp_path))
  example = {"id": "train-000001"}
  a = "<think>3+4=7\n7-2=5</think>5"
  b = "<think>3 + 4 = 7. Then 7 - 2 = 5</think> 5"  # same operations, other words
  c = "<think>3+4=7\n7-1=6\n6-1=5</think>5"
  assert solution_key(task, example, a, "operations") == solution_key(task, example, b,
                                                                      "operations")
  assert solution_key(task, example, a, "operations") != solution_key(task, example, c,
                                                                      "operations")
  assert solution_key(task, {"id": "train-000002"}, a, "operations") != solution_key(
      task, example, a, "operations")
  assert solution_key(task, example, a, "text") != solution_key(task, example, b, "text")
  assert solution_key(task, example, a, "text") == solution_key(task, example, a, "text")
  assert solution_key(task, example, a, "none") is None


def test_is_solution_keeps_verified_finished_samples_and_checks_equations_on_request(tmp_path):
  task = tasks.get("arithmetic", size="tiny", seed=0, data_dir=str(tmp_path))
  good, wrong_step = "<think>3+4=7</think>7", "<think>3+4=8</think>7"  # both verify (reward 1)
  plain, checked = EIConfig(), EIConfig(check_equations=True)
  assert is_solution(task, plain, good, 1.0, True) and is_solution(task, plain, wrong_step, 1.0,
                                                                    True)
  assert is_solution(task, checked, good, 1.0, True)
  assert not is_solution(task, checked, wrong_step, 1.0, True)
  assert not is_solution(task, plain, good, 0.0, True)  # not verified
  assert not is_solution(task, plain, good, 1.0, False)  # cut by max_new_tokens


def test_check_equations_needs_a_task_that_can_check_them(tmp_path):
  tok = tokenizers.builtin_tokenizer()
  policy = rlthink.init_policy("tiny", seed=0, num_layers=2, tokenizer=tok,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               bos_token_id=tok.bos_token_id)
  task = tasks.get("general_qa", size="tiny", data_dir=str(tmp_path / "data"))
  with pytest.raises(ValueError, match="check_equations=True, but task 'general_qa'"):
    run_expert_iteration(policy, task, EIConfig(check_equations=True), OptimizerConfig(),
                         str(tmp_path / "run"), progress=False)


def test_ei_config_checks():
  with pytest.raises(ValueError, match="EIConfig.dedup='exact'"):
    EIConfig(dedup="exact")
  with pytest.raises(ValueError, match=r"EIConfig: iterations=0 \(must be >= 1\)"):
    EIConfig(iterations=0)
  assert EIConfig(dense_reward="prm").dense_reward == "prm"  # kept by its return
  with pytest.raises(ValueError, match="RCRLConfig.dense_reward='prm': RCRL labels"):
    RCRLConfig(dense_reward="prm")


def _untrained(tmp_path):
  """An untrained tiny policy and a 16-question task: the CLI tests' model and sampling shapes
  (16 prompts x 4 samples of 24 tokens), so one compile of the sampler."""
  tok = tokenizers.builtin_tokenizer()
  policy = rlthink.init_policy("tiny", seed=0, mesh=sharding.make_mesh(), num_layers=2,
                               tokenizer=tok, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
  task = tasks.get("arithmetic", size="tiny", seed=0, num_train=16, num_test=8,
                   data_dir=str(tmp_path / "data"))
  return policy, task


def test_ei_from_a_model_that_solves_nothing_fails_with_a_clear_error(tmp_path):
  policy, task = _untrained(tmp_path)
  cfg = EIConfig(iterations=1, samples_per_question=4, num_questions=16, max_new_tokens=24,
                 batch_size=8)
  with pytest.raises(RuntimeError, match="no correct sample among 64.*train it with SFT first"):
    run_expert_iteration(policy, task, cfg, OptimizerConfig(), str(tmp_path / "run"),
                         progress=False)
  with pytest.raises(ValueError, match="needs a policy with a tokenizer"):
    run_expert_iteration(policy.replace(tokenizer=None), task, cfg, OptimizerConfig(),
                         str(tmp_path / "run"), progress=False)


def test_rounds_of_different_lengths_share_one_compiled_train_step(tmp_path, monkeypatch):
  """Each round trains its own number of steps from a fresh optimizer state (the LR schedule's
  length set in that state), through one train step compiled once for the whole run."""
  import jax

  from rlthink.algorithms import expert_iteration as ei
  from rlthink.algorithms import rounds
  from rlthink.train.optim import ScheduleState
  built = []

  def counting(*args, **kwargs):
    built.append(ei_make_train_step(*args, **kwargs))
    return built[-1]

  def recording(state, *args, **kwargs):  # each round's schedule length, as its state holds it
    lengths.extend(int(node.total_steps) for node in jax.tree.leaves(
        state.opt_state, is_leaf=lambda n: isinstance(n, ScheduleState))
                   if isinstance(node, ScheduleState))
    return ei_run_steps(state, *args, **kwargs)

  ei_make_train_step, ei_run_steps, lengths = rounds.make_train_step, rounds.run_steps, []
  monkeypatch.setattr(rounds, "make_train_step", counting)
  monkeypatch.setattr(rounds, "run_steps", recording)
  # Every sample counts as a solution, so an untrained model's rounds train too.
  monkeypatch.setattr(ei, "is_solution", lambda *args: True)
  policy, task = _untrained(tmp_path)
  cfg = EIConfig(iterations=2, samples_per_question=4, num_questions=16, max_new_tokens=24,
                 batch_size=16, dedup="none", epochs=1.0, max_length=64)
  _, history = run_expert_iteration(policy, task, cfg, OptimizerConfig(schedule="cosine"),
                                    str(tmp_path / "run"), progress=False)
  assert [h["train_steps"] for h in history] == [4, 8]  # 64 then 128 samples, 16 per batch
  assert lengths == [4, 8]
  assert len(built) == 1 and built[0]._cache_size() == 1


def test_with_a_dense_reward_a_sample_is_kept_by_its_return(tmp_path, monkeypatch):
  """EI asks for the stage's dense reward and keeps a sample when its final reward plus the sum
  of its step rewards reaches min_reward."""
  from rlthink.algorithms import expert_iteration as ei
  from rlthink.rewards import sources
  options, real_is_solution = {}, ei.is_solution

  def rewards(scored, task, tokenizer, **kwargs):
    options.update(kwargs)
    n, width = len(scored.texts), scored.rollouts.prompt_tokens.shape[1] - 1
    dense = np.zeros((n, width + scored.rollouts.completion_tokens.shape[1]), np.float32)
    dense[:, -1] = 0.15  # two steps' rewards on every row: +0.3
    dense[:, -2] = 0.15
    final = np.asarray([1.0, 0.9, 0.6, 0.0] * (n // 4), np.float32)  # returns 1.3, 1.2, 0.9, 0.3
    return sources.Rewards(final, dense)

  monkeypatch.setattr(sources, "compute_rewards", rewards)
  # The untrained model rarely stops: count every sample as finished.
  monkeypatch.setattr(ei, "is_solution", lambda task, cfg, text, reward, stopped:
                      real_is_solution(task, cfg, text, reward, True))
  policy, task = _untrained(tmp_path)
  cfg = EIConfig(iterations=1, samples_per_question=4, num_questions=16, max_new_tokens=24,
                 batch_size=16, dedup="none", epochs=1.0, max_length=64, min_reward=1.2,
                 dense_reward="step_match", dense_coef=0.3)
  _, history = run_expert_iteration(policy, task, cfg, OptimizerConfig(), str(tmp_path / "run"),
                                    progress=False)
  assert options["dense_reward"] == "step_match" and options["dense_coef"] == 0.3
  assert history[0]["kept"] == history[0]["dataset_size"] == 32  # returns 1.3 and 1.2 of 64
  assert history[0]["sample_accuracy"] == 0.5
