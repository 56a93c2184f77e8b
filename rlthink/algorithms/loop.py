"""The iteration loop of PPO, GRPO and START, written once:

    for each iteration i (resumable):
      questions  <- the next prompts_per_iteration of a seeded permutation (`positions`)
      rollouts   <- samples_per_prompt completions of each, from the current policy
      rewards    <- the config's reward options (verifier / ORM, + dense; `rewards.sources`)
      batch      <- the algorithm's `prepare`: scoring forwards, drift check, advantages
      state      <- epochs of minibatch updates of the algorithm's loss
      evaluate, then checkpoint (train state + frozen trees + reward models, and the history;
      every cfg.checkpoint_every iterations and after the last)

An algorithm is an `Update`: its loss, optimizer and initial params, the trees it keeps frozen
(reference policy, KL controller), and `prepare`. With LoRA (`OptimizerConfig.lora`,
`policy_update`) the train state holds only the adapters; the frozen base is the reference
policy, neither copied nor checkpointed (it is the stage's input). Data positions are pure
functions of (seed, iteration), and the checkpoint after each iteration holds everything that
changes, so a run killed at any moment and resumed is exactly the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optax

from rlthink.algorithms import positions, scoring, stages
from rlthink.algorithms.config import stage_optimizer
from rlthink.models import lora
from rlthink.rewards import sources
from rlthink.train import (Checkpointer, MetricsLogger, create_state, make_optimizer,
                           make_train_step, run_steps)


@dataclasses.dataclass(frozen=True)
class Iteration:
  """One iteration's inputs to `Update.prepare`.

  index: the 0-based iteration; tree: {"state": TrainState, **frozen trees, **reward models}
  before the update; scored: the `ScoredRollouts`; rewards: the `sources.Rewards`. With a LoRA
  `Update.base`, tree["state"].params are the policy's (base + adapters, `lora.combine`) and
  tree["reference"] is the base.
  """

  index: int
  tree: dict
  scored: Any
  rewards: sources.Rewards


@dataclasses.dataclass(frozen=True)
class Update:
  """What an iterative RL algorithm gives `run_iterations`.

  name: the log prefix and progress label ("ppo"). loss_fn(params, batch, rng) -> (loss,
    metrics). optimizer, grad_accum_steps: the train step's. params: the initial train-state
    params. frozen: further trees to checkpoint ({"reference": ...}).
  prepare(Iteration) -> (batch: {key: numpy [rows, ...]}, stats: dict of numbers for the
    history). policy_params(train-state params) -> the policy's params (default: the same).
  after_update(tree, stats) -> tree: e.g. PPO's KL controller (default: none).
  base: None, or the frozen base params of LoRA training (`lora.Trainable.base`): the train
    step's non-donated argument and the reference policy; never checkpointed.
  """

  name: str
  loss_fn: Callable
  optimizer: optax.GradientTransformation
  params: Any
  prepare: Callable[[Iteration], tuple[dict, dict]]
  grad_accum_steps: int = 1
  frozen: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  policy_params: Callable[[Any], Any] = lambda params: params
  after_update: Callable[[dict, dict], dict] | None = None
  base: Any = None


def policy_update(name: str, policy, cfg, optimizer_cfg, loss_fn: Callable,
                  prepare: Callable[[Iteration], tuple[dict, dict]]) -> Update:
  """The `Update` of an algorithm that trains the policy's own params with the stage's optimizer
  (`stage_optimizer`; GRPO, START), keeping a frozen reference policy when cfg.kl_coef > 0: a
  compute-dtype copy, or under `optimizer_cfg.lora` the frozen base itself (no copy)."""
  optimizer_cfg = stage_optimizer(optimizer_cfg, cfg)
  trainable = lora.trainable(policy, optimizer_cfg.lora)
  frozen = {}
  if cfg.kl_coef > 0 and trainable.base is None:
    frozen["reference"] = scoring.frozen_reference(trainable.params, policy.config)
  return Update(name=name, loss_fn=trainable.loss(loss_fn), prepare=prepare,
                params=trainable.params, frozen=frozen, base=trainable.base,
                policy_params=trainable.policy_params,
                optimizer=make_optimizer(optimizer_cfg, cfg.iterations * cfg.steps_per_iteration),
                grad_accum_steps=optimizer_cfg.grad_accum_steps)


def run_iterations(policy, task, cfg, directory: str, update: Update, *,
                   examples: Sequence[dict] | None = None, evaluate: Callable | None = None,
                   reward_models: Mapping | None = None, progress: bool = True):
  """Runs (or resumes from `directory`) `cfg.iterations` iterations of `update` from `policy`
  (cfg: an `IterationConfig`); returns (policy, history), one record per iteration."""
  from rlthink.rollout import rollout_examples  # the task pipeline needs grain: not on GPU images

  stages.check_tokenizer(policy, update.name)
  questions = stages.training_questions(task, cfg, examples)
  ckpt = Checkpointer(directory, policy.config)
  per_iteration = cfg.steps_per_iteration
  tree = {"state": create_state(update.params, update.optimizer, cfg.seed), **update.frozen}
  resumed = ckpt.latest_step() is not None
  models = stages.reward_models(cfg, policy, reward_models, resumed)
  tree.update({name: m.params for name, m in models.items()})
  meta = {"iteration": 0, "history": []}
  if resumed:  # reward models come back from the checkpoint: frozen with the run
    tree, meta = ckpt.restore(tree)
  models = {name: dataclasses.replace(m, params=tree[name]) for name, m in models.items()}
  step_fn = make_train_step(update.loss_fn, update.optimizer, tree["state"],
                            update.grad_accum_steps, frozen=update.base)
  logger = MetricsLogger(directory, total=cfg.iterations * per_iteration,
                         initial=meta["iteration"] * per_iteration, desc=update.name,
                         progress=progress)
  minibatch = cfg.minibatch_size or cfg.rows
  train_prefix = f"{update.name}/train_"
  try:
    while meta["iteration"] < cfg.iterations:
      i = meta["iteration"]
      current = policy.replace(params=update.policy_params(tree["state"].params))
      chosen = [questions[int(j)] for j in positions.iteration_indices(
          len(questions), i, cfg.prompts_per_iteration, cfg.seed)]
      clock = time.perf_counter()
      scored = rollout_examples(current, task, chosen, num_samples=cfg.samples_per_prompt,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
      times = {"time_rollout_s": time.perf_counter() - clock}
      rewards = sources.compute_rewards(
          scored, task, policy.tokenizer, reward_source=cfg.reward_source,
          dense_reward=cfg.dense_reward, dense_coef=cfg.dense_coef, models=models,
          batch_size=cfg.score_batch_size)
      batch, stats = update.prepare(Iteration(i, _prepare_view(tree, update), scored, rewards))
      times["time_score_s"] = time.perf_counter() - clock - times["time_rollout_s"]
      batch_at = lambda s: {k: v[positions.minibatch_rows(cfg.rows, minibatch, s, [cfg.seed, i])]
                            for k, v in batch.items()}
      state, last = run_steps(tree["state"], step_fn, batch_at, 0, per_iteration,
                              mesh=policy.mesh, logger=logger, log_every=cfg.log_every,
                              global_offset=i * per_iteration, prefix=train_prefix,
                              checkpointer=ckpt)
      times["time_train_s"] = time.perf_counter() - clock - sum(times.values())
      record = {"iteration": i + 1, "samples": scored.rollouts.num_rows,
                "reward_mean": float(np.mean(scored.rewards)),
                "train_reward_mean": float(np.mean(rewards.final)),
                "completion_length": float(np.mean(scored.rollouts.lengths)), **stats, **times,
                **{k.removeprefix(train_prefix): v for k, v in last.items()}}
      if rewards.dense is not None:
        record["dense_reward_mean"] = float(np.mean(np.sum(rewards.dense, axis=1)))
      tree = dict(tree, state=state)
      if update.after_update is not None:
        tree = update.after_update(tree, stats)
      current = policy.replace(params=update.policy_params(state.params))
      record.update(stages.evaluation_record(evaluate, current, i + 1, i + 1 == cfg.iterations))
      logger.log(i + 1, {k: v for k, v in record.items() if isinstance(v, (int, float))},
                 f"{update.name}/")
      meta = {"iteration": i + 1, "history": meta["history"] + [record]}
      if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == cfg.iterations:
        ckpt.save(i + 1, tree, meta)
  finally:
    logger.close()
  return policy.replace(params=update.policy_params(tree["state"].params)), meta["history"]


def _prepare_view(tree: dict, update: Update) -> dict:
  """The tree `prepare` reads: as it is, or under LoRA with the policy's params in the state and
  the base as the reference (see `Iteration`)."""
  if update.base is None:
    return tree
  state = tree["state"].replace(params=update.policy_params(tree["state"].params))
  return dict(tree, state=state, reference=update.base)
