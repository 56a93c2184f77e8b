"""Return-conditioned RL: labelled prompts match conditioned sampling, the weighted loss against a
numpy reference, a short run from the SFT start that raises the reward, exact resume after SIGKILL
in the middle of a round's fine-tuning."""

import json
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlthink
from rlthink import gin_utils, tasks
from rlthink.algorithms import rcrl, scoring
from rlthink.algorithms.rcrl import ConditionedTask, RCRLConfig, run_rcrl
from rlthink.models import tokenizer as tokenizers
from rlthink.rollout import rollout_examples
from rlthink.sampling.rollouts import ScoredRollouts
from rlthink.tasks.base import PromptFormat
from rlthink.tasks.pipeline import encode_prompt
from rlthink.train import OptimizerConfig, sft_loss
from rlthink.train.batching import SequenceBatcher

import rl_fixtures

RUN = dict(iterations=4, num_questions=4, samples_per_question=16, max_new_tokens=12,
           epochs=6.0, max_steps_per_iteration=24, batch_size=32, max_length=64, log_every=100,
           checkpoint_every=10)
OPTIMIZER = dict(learning_rate=1e-3)
KILL_AFTER = 6  # round 2's fine-tuning, 10 of its 24 steps done


@pytest.fixture(scope="module")
def setup():
  tok = tokenizers.builtin_tokenizer()
  policy = rlthink.init_policy("tiny", seed=0, num_layers=1, vocab_size=128, max_seq_len=160,
                               tokenizer=tok, pad_token_id=0, eos_token_id=2, bos_token_id=1)
  task = tasks.get("arithmetic", size="tiny", seed=0)
  return policy, task, [ex for _, ex in zip(range(3), task.generate("train"))]


def test_labelled_prompts_are_the_conditioned_sampling_prompts(setup):
  policy, task, examples = setup
  scored = rollout_examples(policy, task, examples, num_samples=2, max_new_tokens=2,
                            prompt_prefix="<correct>")
  view = ConditionedTask(task, "<correct>")
  for row in range(scored.rollouts.num_rows):
    expected = encode_prompt(view, examples[row // 2], policy.tokenizer).tolist()
    assert scored.rollouts.prompt(row) == expected
    assert expected[:2] == [1, policy.tokenizer.convert_tokens_to_ids("<correct>")]
  # The view changes prompts only: same data, verifier and task helpers.
  ex = examples[0]
  assert view.verify(task.reference(ex), ex) == 1.0 and view.reference(ex) == task.reference(ex)
  assert view.operations(task.reference(ex)) == task.operations(task.reference(ex))
  assert view.splits == task.splits and view.config_name == task.config_name


def test_label_at_the_end_goes_before_an_opened_thinking(setup):
  _, task, examples = setup
  ex = examples[0]
  assert ConditionedTask(task, "<correct>", "end").prompt(ex) == task.prompt(ex) + "<correct>"
  opened = tasks.get("arithmetic", size="tiny", seed=0,
                     prompt_format=PromptFormat(open_thinking_in_prompt=True))
  text = ConditionedTask(opened, "<incorrect>", "end").prompt(ex)
  assert text == opened.prompt(ex)[:-len("<think>")] + "<incorrect><think>"
  with pytest.raises(ValueError, match="label position"):
    ConditionedTask(task, "<correct>", "middle")


def test_label_rollouts_label_by_the_threshold(setup):
  policy, task, examples = setup
  scored = rollout_examples(policy, task, examples[:2], num_samples=2, max_new_tokens=3, seed=3)
  scored = ScoredRollouts(scored.examples, 2, scored.texts,
                          np.asarray([1.0, 0.0, 0.5, 1.0], np.float32), scored.rollouts)
  tok = policy.tokenizer
  correct, incorrect = tok.convert_tokens_to_ids("<correct>"), tok.convert_tokens_to_ids(
      "<incorrect>")
  data, num_correct = rcrl.label_rollouts(task, scored, tok, RCRLConfig(threshold=1.0))
  assert num_correct == 2
  assert [d[0][1] for d in data] == [correct, incorrect, incorrect, correct]
  assert [d[2] for d in data] == [1, 0, 0, 1]
  for row, (prompt, completion, _) in enumerate(data):
    assert completion == scored.rollouts.completion(row)
    assert prompt[:1] + prompt[2:] == scored.rollouts.prompt(row)  # unlabelled sampling prompt
  data, num_correct = rcrl.label_rollouts(task, scored, tok, RCRLConfig(threshold=0.5))
  assert num_correct == 3
  # a learned reward (an ORM's probabilities) labels instead of the verifier's when given
  data, num_correct = rcrl.label_rollouts(task, scored, tok, RCRLConfig(threshold=0.5),
                                          rewards=np.asarray([0.1, 0.7, 0.2, 0.5], np.float32))
  assert num_correct == 2 and [d[2] for d in data] == [0, 1, 0, 1]


def test_label_weights_balance_the_labels():
  w = rcrl.label_weights([1, 0, 0, 0, 1, 0, 0, 0])
  assert w[[0, 4]].sum() == pytest.approx(w[[1, 2, 3, 5, 6, 7]].sum()) and w.sum() == 8
  np.testing.assert_array_equal(rcrl.label_weights([0, 0, 0]), [1, 1, 1])


def test_weighted_loss_against_numpy(setup):
  policy, task, examples = setup
  data = [(encode_prompt(task, ex, policy.tokenizer).tolist(),
           policy.tokenizer.encode(task.reference(ex), add_special_tokens=False)) for ex in examples]
  weights = np.asarray([3.0, 0.5, 1.0], np.float32)
  batch = SequenceBatcher(data, 3, 96, 0, weights=weights)(0)
  loss_fn = rcrl.rcrl_loss(policy.config)
  loss = float(loss_fn(policy.params, jax.tree.map(jnp.asarray, batch), None)[0])
  logp = np.asarray(scoring.score_tokens(policy.config, policy.params,
                                         jnp.asarray(batch["tokens"]),
                                         jnp.asarray(batch["attention_mask"]))["logprobs"])
  mask = batch["loss_mask"][:, 1:]
  w = batch["weights"][:, None] * mask
  assert loss == pytest.approx(-(logp * w).sum() / w.sum(), rel=1e-5)
  unit = dict(batch, weights=np.ones(3, np.float32))
  sft = float(sft_loss(policy.config)(policy.params, jax.tree.map(jnp.asarray, unit), None)[0])
  assert float(loss_fn(policy.params, jax.tree.map(jnp.asarray, unit), None)[0]) == (
      pytest.approx(sft, rel=1e-6))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An uninterrupted run, and (concurrently, in a subprocess) the same run killed after
  checkpoint KILL_AFTER (inside round 2's fine-tuning), then resumed here."""
  return rl_fixtures.full_and_killed_runs(tmp_path_factory, "rcrl", "run_rcrl", "RCRLConfig",
                                          RUN, OPTIMIZER, KILL_AFTER)


def test_rcrl_raises_the_reward_from_sft(runs):
  history = runs["history"]
  assert [h["conditioned"] for h in history] == [False, True, True, True]
  rewards = [h["reward_mean"] for h in history]
  assert np.mean(rewards[-2:]) > rewards[0] + 0.1, rewards
  rows = RUN["num_questions"] * RUN["samples_per_question"]
  for i, h in enumerate(history):
    assert h["correct"] + h["incorrect"] == h["samples"] == rows
    assert np.isfinite(h["train_loss"]) and h["train_steps"] >= 1
    assert h["correct"] == round(h["reward_mean"] * rows)  # exact-answer rewards are 0 or 1
    assert h["dataset_size"] == rows * (i + 1)  # accumulated: D_i = R_i + D_(i-1)


def test_resume_after_sigkill_in_fine_tuning_is_exact(runs):
  assert runs["returncode"] == -9, runs["stderr"][-3000:]
  killed_dir = runs["killed_dir"]
  latest = max(int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints"))
               if d.isdigit())
  _, meta = rl_fixtures.saved_tree(killed_dir, latest)
  assert meta["phase"] == "train" and 0 < meta["position"] < meta["steps"], meta["position"]
  final, history = run_rcrl(runs["policy"], runs["task"], RCRLConfig(**RUN),
                            OptimizerConfig(**OPTIMIZER), killed_dir, progress=False)
  assert history == runs["history"]
  jax.tree.map(np.testing.assert_array_equal, final.params, runs["final"].params)
  step = max(int(d) for d in os.listdir(os.path.join(runs["full_dir"], "checkpoints"))
             if d.isdigit())
  full, full_meta = rl_fixtures.saved_tree(runs["full_dir"], step)
  resumed, resumed_meta = rl_fixtures.saved_tree(killed_dir, step)
  jax.tree.map(np.testing.assert_array_equal, full, resumed)
  assert full_meta["dataset"] == resumed_meta["dataset"]
  labels = {d[0][1] for d in full_meta["dataset"]}  # every prompt: <bos>, then its label
  tok = runs["policy"].tokenizer
  assert labels == {tok.convert_tokens_to_ids("<correct>"), tok.convert_tokens_to_ids(
      "<incorrect>")}
  # One step axis: the cumulative train step over the rounds, the same after the kill and resume.
  total = sum(h["train_steps"] for h in runs["history"])
  assert resumed_meta["step_offset"] == full_meta["step_offset"] == total
  for directory in (runs["full_dir"], killed_dir):
    assert _train_steps(directory) == list(range(1, total + 1)), directory


def _train_steps(directory):
  with open(os.path.join(directory, "metrics.jsonl")) as f:
    return [r["step"] for r in map(json.loads, f) if "rcrl/train_loss" in r]


def test_config_errors_name_the_option(setup):
  with pytest.raises(ValueError, match="must be non-empty and different"):
    RCRLConfig(correct_label="<x>", incorrect_label="<x>")
  with pytest.raises(ValueError, match="label_position"):
    RCRLConfig(label_position="prompt")
  with pytest.raises(ValueError, match="cannot encode the RCRL label"):
    rcrl.check_label(setup[0].tokenizer, "é")


@pytest.mark.parametrize("path", ["algorithms/rcrl.gin", "experiments/rcrl_tiny.gin"])
def test_gin_files_bind_a_valid_config(path):
  try:
    gin_utils.parse([path], [])
    cfg = gin_utils.configured(RCRLConfig)  # runs the config's checks on the bound values
    assert cfg.correct_label == "<correct>" and cfg.iterations >= 2
  finally:
    gin.clear_config(clear_constants=True)
