"""Drivers as experiment stages (`run_stage(policy, cfg, ctx)`): each writes its stage's own
directory, trains on the stage's examples, evaluates through `ctx.evaluate`, and finds the reward
models other stages trained through `ctx.stage_directory`; the rewards it trains on (ORM, dense
step matching) are checked against a brute-force recomputation from the same samples."""

import os

import numpy as np
import pytest

from rlthink import rollout
from rlthink.algorithms import ALGORITHMS, StageContext, grpo
from rlthink.algorithms.expert_iteration import EIConfig, run_expert_iteration
from rlthink.algorithms.grpo import GRPOConfig
from rlthink.algorithms.reward_model import RewardModelConfig
from rlthink.rewards import dense
from rlthink.rewards import reward_model as rm_lib
from rlthink.train import OptimizerConfig

import rl_fixtures

ORM = RewardModelConfig(num_questions=8, samples_per_question=2, max_new_tokens=12, max_steps=3,
                        batch_size=8, max_length=64, holdout_fraction=0.25, log_every=100)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """The SFT start, and a workdir whose stage 'orm' trained an outcome reward model."""
  policy, task = rl_fixtures.sft_start(rl_fixtures.session_base(tmp_path_factory))
  workdir = str(tmp_path_factory.mktemp("stages"))
  ctx = StageContext(name="orm", directory=os.path.join(workdir, "orm"), task=task,
                     optimizer=OptimizerConfig(learning_rate=1e-3), progress=False)
  out, history = ALGORITHMS["orm"].runner()(policy, ORM, ctx)
  assert out is policy and history[0]["train_steps"] == 3
  return policy, task, workdir


def _context(workdir, task, name, examples, calls):
  return StageContext(
      name=name, directory=os.path.join(workdir, name), task=task, examples=examples,
      optimizer=OptimizerConfig(learning_rate=1e-4), progress=False,
      evaluate=lambda policy, i, last: calls.append((i, last)) or {"accuracy": 0.25},
      stage_directory=lambda stage: os.path.join(workdir, stage))


def _recording(monkeypatch):
  """Records the examples of every `rollout_examples` call (the loops import it at run time)."""
  seen, real = [], rollout.rollout_examples
  monkeypatch.setattr(rollout, "rollout_examples",
                      lambda policy, task, examples, **kw: seen.append(list(examples))
                      or real(policy, task, examples, **kw))
  return seen, real


def test_grpo_stage_trains_on_orm_plus_summed_step_rewards(setup, monkeypatch):
  policy, task, workdir = setup
  examples = task.examples("train")[100:104]  # the stage's data: not the split's first questions
  cfg = GRPOConfig(iterations=1, prompts_per_iteration=4, samples_per_prompt=4,
                   max_new_tokens=12, minibatch_size=16, reward_source="orm",
                   dense_reward="step_match", dense_coef=0.3, seed=3, log_every=100)
  seen, sample = _recording(monkeypatch)
  rewards, prepare = [], grpo.prepare_batch
  monkeypatch.setattr(grpo, "prepare_batch",
                      lambda *args: rewards.append(np.asarray(args[4])) or prepare(*args))
  calls = []
  final, history = ALGORITHMS["grpo"].runner()(
      policy, cfg, _context(workdir, task, "rl_comp", examples, calls))

  assert sorted(e["id"] for e in seen[0]) == sorted(e["id"] for e in examples)
  assert calls == [(1, True)] and history[0]["eval_accuracy"] == 0.25
  assert history[0]["samples"] == 16
  tree, _ = rl_fixtures.saved_tree(os.path.join(workdir, "rl_comp"), 1)
  assert set(tree) == {"state", "orm"}  # the ORM is frozen with the run
  # Brute force: the same samples again (same policy and seed), scored by the ORM stage's model.
  scored = sample(policy, task, seen[0], num_samples=4, max_new_tokens=12, seed=3 * 100_003,
                  batch_size=cfg.sample_batch_size)
  orm = rm_lib.load_reward_model(os.path.join(workdir, "orm"), "outcome", policy)
  probs = rm_lib.score_rollouts(orm, scored.rollouts)
  steps = dense.step_match_rewards(task, scored, policy.tokenizer, 0.3).sum(axis=1)
  np.testing.assert_allclose(rewards[0], probs + steps, rtol=1e-5, atol=1e-6)  # GRPO: the sum
  assert history[0]["train_reward_mean"] == pytest.approx(float(np.mean(probs)), rel=1e-5)
  assert history[0]["dense_reward_mean"] == pytest.approx(float(np.mean(steps)), rel=1e-5)
  assert history[0]["reward_mean"] == pytest.approx(float(np.mean(scored.rewards)))


def test_ei_stage_keeps_the_samples_the_orm_accepts(setup):
  policy, task, workdir = setup
  examples = task.examples("train")[200:204]
  # Brute force first: the round's samples (every question, the initial policy, seed * 100_003)
  # and the ORM's probabilities; the threshold splits them, so the ORM - not the verifier -
  # decides which samples are kept.
  scored = rollout.rollout_examples(policy, task, examples, num_samples=4, max_new_tokens=12,
                                    seed=4 * 100_003, batch_size=256)
  orm = rm_lib.load_reward_model(os.path.join(workdir, "orm"), "outcome", policy)
  probs = rm_lib.score_rollouts(orm, scored.rollouts)
  threshold = float(np.median(probs))
  accepted = (probs >= threshold) & np.asarray(scored.rollouts.stopped)
  assert 0 < accepted.sum() < len(probs), probs
  cfg = EIConfig(iterations=1, samples_per_question=4, max_new_tokens=12, reward_source="orm",
                 min_reward=threshold, dedup="none", max_steps_per_iteration=2, batch_size=8,
                 max_length=64, seed=4, log_every=100)
  calls = []
  _, history = ALGORITHMS["ei"].runner()(policy, cfg,
                                          _context(workdir, task, "ei", examples, calls))
  assert history[0]["kept"] == history[0]["dataset_size"] == int(accepted.sum())
  assert history[0]["samples"] == 16 and calls == [(1, True)]
  with pytest.raises(ValueError, match="EIConfig.reward_source='orm' needs the outcome reward"):
    run_expert_iteration(policy, task, cfg, OptimizerConfig(), os.path.join(workdir, "ei2"),
                         examples=examples, progress=False)


def test_a_stage_without_the_reward_model_stage_names_it(setup):
  policy, task, workdir = setup
  cfg = GRPOConfig(iterations=1, prompts_per_iteration=2, samples_per_prompt=2,
                   dense_reward="prm", prm_stage="my_prm")
  ctx = StageContext(name="rl", directory=os.path.join(workdir, "rl"), task=task,
                     optimizer=OptimizerConfig(), progress=False,
                     stage_directory=lambda stage: os.path.join(workdir, stage))
  with pytest.raises(FileNotFoundError, match="my_prm"):
    ALGORITHMS["grpo"].runner()(policy, cfg, ctx)
