"""Expert Iteration (Havrilla et al. 2024): sample K solutions per training question, keep the
correct ones, de-duplicate, accumulate across iterations (D_i = R_i ∪ D_{i-1}), fine-tune.

A round of `rlthink.algorithms.rounds`: resumable at any point; the checkpoint holds the train
state (and the initial parameters when each round restarts from them) and the JSON meta holds the
iteration, the phase, the accumulated dataset (token ids) and the metrics history. "Correct" is
the sample's return reaching min_reward: the config's final reward (`reward_source`: the verifier,
or an ORM's probability) plus, with a `dense_reward`, the sum of its step rewards (the reference
steps it matches, or a PRM's verdicts on its steps).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from rlthink.algorithms import rounds, stages
from rlthink.algorithms.config import RoundConfig
from rlthink.models import lora
from rlthink.policy import Policy
from rlthink.rewards import sources
from rlthink.rollout import rollout_examples
from rlthink.tasks.base import Task
from rlthink.train import OptimizerConfig, sft_loss
from rlthink.train.batching import SequenceBatcher

DEDUP_MODES = ("operations", "text", "none")


@dataclasses.dataclass(frozen=True)
class EIConfig(RoundConfig):
  """Expert Iteration settings; the sampling, reward and fine-tuning fields are `RoundConfig`'s
  (iterations: rounds of sample -> filter -> fine-tune; samples_per_question: K, the paper used
  4 to 96; num_questions: training questions sampled per round, None: the whole split).

  dedup: "operations" (same sequence of arithmetic operations = duplicate, where the task
    provides `operations(text)`), "text" (identical completion text) or "none".
  reset_each_iteration: fine-tune from the initial model every round (the paper's choice) or
    continue from the current one.
  min_reward: a finished sample (one that ended with a stop token) is kept when its return is
    at least this: its final reward, plus the sum of its dense rewards with a `dense_reward`
    (e.g. step_match with min_reward = 1 + dense_coef / 2: right answers whose first half of the
    reference steps match; prm with 1.0: right answers whose steps the PRM approves on balance).
  check_equations: also require every equation of the sample's thinking to be true (tasks that
    provide `equations_hold(text)`, e.g. arithmetic). The final-answer verifier accepts right
    answers reached by wrong steps ("<think>7+1=7</think>8"); a small model writes many, and
    fine-tuning on them teaches the wrong steps.
  Rounds are short, so a smaller learning rate than SFT's and little or no warm-up usually suit
  them (`learning_rate`, `warmup_steps`).
  """

  dedup: str = "operations"
  reset_each_iteration: bool = True
  min_reward: float = 1.0
  check_equations: bool = False

  def __post_init__(self):
    super().__post_init__()
    if self.dedup not in DEDUP_MODES:
      raise ValueError(f"EIConfig.dedup={self.dedup!r} is not one of {DEDUP_MODES}")


def solution_key(task: Task, example: dict, text: str, mode: str):
  """What makes two correct solutions of one question 'the same' for de-duplication."""
  if mode == "operations" and hasattr(task, "operations"):
    return (example["id"], "ops", tuple(task.operations(text)))
  if mode == "none":
    return None
  return (example["id"], "text", text)


def is_solution(task: Task, cfg: EIConfig, text: str, reward: float, stopped: bool) -> bool:
  """Whether a sampled completion is kept as a solution: its return (`reward`) >= min_reward,
  finished, and, with `check_equations`, every equation of its thinking true."""
  # A completion cut by max_new_tokens is no solution, even when its last number happens to
  # verify; training on it would also teach the model not to stop.
  if reward < cfg.min_reward or not stopped:
    return False
  return not cfg.check_equations or task.equations_hold(text)


def run_expert_iteration(policy: Policy, task: Task, cfg: EIConfig,
                         optimizer_cfg: OptimizerConfig, directory: str, *,
                         examples: Sequence[dict] | None = None,
                         evaluate: Callable | None = None, reward_models: Mapping | None = None,
                         progress: bool = True) -> tuple[Policy, list[dict]]:
  """Runs (or resumes from `directory`) Expert Iteration from `policy`; returns (final policy,
  per-round metrics). The keyword arguments are every driver's (`rlthink.algorithms.stages`)."""
  stages.check_tokenizer(policy, "Expert Iteration")
  if cfg.check_equations and not hasattr(task, "equations_hold"):
    raise ValueError(f"EIConfig.check_equations=True, but task {task.name!r} has no "
                     "equations_hold(text) to check the equations of a solution with")
  questions = stages.training_questions(task, cfg, examples)
  pad_id = policy.config.pad_token_id or policy.tokenizer.pad_token_id or 0
  trainable = lora.trainable(policy, optimizer_cfg.lora)  # all params, or LoRA adapters

  def collect(i, state, frozen, meta):
    params = trainable.policy_params(trainable.params if state is None else state.params)
    scored = rollout_examples(policy.replace(params=params), task, questions,
                              num_samples=cfg.samples_per_question,
                              max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
    rewards = sources.compute_rewards(scored, task, policy.tokenizer,
                                      reward_source=cfg.reward_source,
                                      dense_reward=cfg.dense_reward, dense_coef=cfg.dense_coef,
                                      models=frozen, batch_size=cfg.score_batch_size).returns
    dataset, keys = list(meta["dataset"]), list(meta.get("keys", []))
    seen = {tuple(map(_freeze, k)) for k in keys}
    new, kept = 0, 0
    ro = scored.rollouts
    for row, reward in enumerate(rewards):
      if not is_solution(task, cfg, scored.texts[row], reward, bool(ro.stopped[row])):
        continue
      kept += 1
      key = solution_key(task, scored.example_of(row), scored.texts[row], cfg.dedup)
      frozen_key = None if key is None else tuple(map(_freeze, key))
      if frozen_key is not None and frozen_key in seen:
        continue
      if frozen_key is not None:
        seen.add(frozen_key)
        keys.append(_jsonable(key))
      dataset.append([ro.prompt(row), ro.completion(row)])
      new += 1
    solved = np.mean([any(r >= cfg.min_reward for r in rs) for rs in scored.per_example(rewards)])
    record = {"iteration": i + 1, "samples": len(rewards), "solve_rate": float(solved),
              "sample_accuracy": float(np.mean(rewards >= cfg.min_reward)),
              "kept": kept, "new_unique": new, "dataset_size": len(dataset)}
    if not dataset:
      raise RuntimeError(
          f"Expert Iteration round {i + 1}: no correct sample among {len(rewards)}; the policy "
          f"cannot solve any training question (train it with SFT first, raise "
          f"samples_per_question or temperature)")
    return record, {"dataset": dataset, "keys": keys}

  def start_params(i, state, frozen):
    if state is None or cfg.reset_each_iteration:
      return frozen.get("init", trainable.params)
    return state.params

  def batches(meta, i):
    return SequenceBatcher([tuple(s) for s in meta["dataset"]], cfg.batch_size, cfg.max_length,
                           pad_id, seed=cfg.seed * 7919 + i)

  def finish(i, state, meta, last):
    return stages.evaluation_record(evaluate, policy.replace(
        params=trainable.policy_params(state.params)), i + 1, last)

  round_ = rounds.Round(
      name="ei", loss_fn=trainable.loss(sft_loss(policy.config, policy.mesh)),
      template=trainable.params, collect=collect, start_params=start_params, batches=batches,
      steps=cfg.steps_for, finish=finish, base=trainable.base,
      frozen={"init": trainable.params} if cfg.reset_each_iteration else {})
  state, history = rounds.run_rounds(policy, cfg, optimizer_cfg, directory, round_,
                                     iterations=cfg.iterations, reward_models=reward_models,
                                     progress=progress)
  return policy.replace(params=trainable.policy_params(state.params)), history


def _freeze(x):
  return tuple(map(_freeze, x)) if isinstance(x, (list, tuple)) else x


def _jsonable(x):
  return [_jsonable(v) for v in x] if isinstance(x, (list, tuple)) else x


def run_stage(policy, cfg: EIConfig, ctx):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return stages.run_as_stage(run_expert_iteration, policy, cfg, ctx)
