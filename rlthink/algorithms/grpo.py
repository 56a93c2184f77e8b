"""GRPO (Shao et al. 2024, DeepSeekMath): PPO's clipped objective without a value model.

Each iteration: sample K completions of each of a batch of training questions, score them with the
task's verifier, give every token of a completion the group-normalized advantage of its reward
((r - mean of the K) / std, or without the std: Dr. GRPO), then run `epochs` passes of minibatch
updates of the clipped policy loss, optionally plus kl_coef * KL(policy || reference) with a
choice of estimator (k3 by default, as in the paper).

With one epoch and one minibatch (the default) the update is on-policy: the ratio is 1 and the
loss gradient is the policy gradient. The rollout's log-probs are checked against a forward pass
of the same params and the drift is logged.

Resumable: the checkpoint after each iteration holds the train state and, when kl_coef > 0, the
reference params; the JSON meta holds the iteration and the history.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np

from rlthink.algorithms import core
from rlthink.rollout import rollout_examples
from rlthink.train import (Checkpointer, MetricsLogger, create_state, make_optimizer,
                           make_train_step, run_steps)

OLD_LOGPROBS = ("forward", "rollout")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """GRPO settings.

  iterations: rounds of sample -> score -> group advantages -> update.
  prompts_per_iteration, samples_per_prompt: questions per iteration and the group size K.
  num_questions: the first this many questions of `split` form the training pool (None: all).
  epochs, minibatch_size: passes over the rollout batch and rows per optimizer step (None: the
    whole batch, one step per epoch).
  clip_eps (clip_eps_high): ratio clip range.
  kl_coef: weight of the KL-to-reference loss term (0: no reference model); kl_estimator: "k1",
    "k2" or "k3".
  normalize: "std" (divide by the group's std) or "none".
  aggregation: "sequence_mean" (the paper), "token_mean" or "token_sum_norm".
  entropy_coef: weight of an entropy bonus (0: logged only).
  learning_rate: overrides the experiment's OptimizerConfig.learning_rate for this stage (the
    experiment shares one OptimizerConfig between its stages; RL wants a smaller rate than SFT).
  old_logprobs: "forward" (recompute with a training forward) or "rollout" (the sampler's).
  """

  iterations: int = 10
  prompts_per_iteration: int = 16
  samples_per_prompt: int = 8
  num_questions: int | None = None
  split: str = "train"
  temperature: float = 1.0
  max_new_tokens: int = 64
  epochs: int = 1
  minibatch_size: int | None = None
  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  normalize: str = "std"
  aggregation: str = "sequence_mean"
  entropy_coef: float = 0.0
  old_logprobs: str = "forward"
  learning_rate: float | None = None
  score_batch_size: int = 64
  sample_batch_size: int = 256
  seed: int = 0
  log_every: int = 10

  def __post_init__(self):
    core.check_choice("GRPOConfig.kl_estimator", self.kl_estimator, core.KL_ESTIMATORS)
    core.check_choice("GRPOConfig.normalize", self.normalize, core.GROUP_NORMALIZATIONS)
    core.check_choice("GRPOConfig.aggregation", self.aggregation, core.AGGREGATIONS)
    core.check_choice("GRPOConfig.old_logprobs", self.old_logprobs, OLD_LOGPROBS)
    counts = {k: getattr(self, k) for k in ("iterations", "prompts_per_iteration",
                                            "samples_per_prompt", "epochs", "max_new_tokens",
                                            "score_batch_size", "sample_batch_size")}
    counts.update({k: getattr(self, k) for k in ("num_questions", "minibatch_size")
                   if getattr(self, k) is not None})
    bad = [f"{k}={v}" for k, v in counts.items() if v < 1]
    if self.minibatch_size is not None and self.minibatch_size > self.rows:
      bad.append(f"minibatch_size={self.minibatch_size} (more than the rollout batch, "
                 f"prompts_per_iteration * samples_per_prompt)")
    if self.samples_per_prompt < 2:
      bad.append(f"samples_per_prompt={self.samples_per_prompt} (a group needs >= 2)")
    if bad or self.clip_eps <= 0 or self.kl_coef < 0:
      raise ValueError(f"GRPOConfig: {', '.join(bad) or 'a value'} out of range (counts >= 1, "
                       f"clip_eps > 0, kl_coef >= 0): {self}")

  @property
  def rows(self) -> int:
    return self.prompts_per_iteration * self.samples_per_prompt

  @property
  def steps_per_iteration(self) -> int:
    return self.epochs * -(-self.rows // (self.minibatch_size or self.rows))


def grpo_loss(config, cfg: GRPOConfig, mesh=None):
  """loss_fn(params, batch, rng) -> (loss, metrics) for `rlthink.train.make_train_step`.

  batch (token frame, see `core`): tokens, attention_mask [B, T]; completion_mask,
  old_logprobs [B, T-1]; advantages float[B]; ref_logprobs [B, T-1] when cfg.kl_coef > 0.
  loss = clipped policy loss + kl_coef * KL - entropy_coef * entropy.
  """

  def loss_fn(params, batch, rng):
    del rng
    tokens, mask = batch["tokens"], batch["completion_mask"]
    scores = core.forward_scores(config, params, tokens, batch["attention_mask"],
                                 with_entropy=True, mesh=mesh)
    logprobs = scores["logprobs"]
    loss, metrics = core.clipped_policy_loss(logprobs, batch["old_logprobs"], batch["advantages"],
                                             mask, cfg.clip_eps, cfg.clip_eps_high,
                                             cfg.aggregation)
    metrics["policy_loss"] = loss
    if cfg.kl_coef > 0:
      kl = core.aggregate(core.kl_estimate(logprobs, batch["ref_logprobs"], cfg.kl_estimator),
                          mask, cfg.aggregation)
      loss = loss + cfg.kl_coef * kl
      metrics["kl"] = kl
    entropy = core.entropy_bonus(scores["entropy"], mask, cfg.aggregation)
    if cfg.entropy_coef == 0:
      entropy = jax.lax.stop_gradient(entropy)  # a metric only
    metrics["entropy"] = entropy
    return loss - cfg.entropy_coef * entropy, metrics

  return loss_fn


def prepare_batch(config, params, reference, rollouts, rewards: np.ndarray, cfg: GRPOConfig,
                  mesh=None) -> tuple[dict, dict]:
  """The training batch of one rollout batch (numpy) and its stats (drift, advantages)."""
  batch = core.rollout_batch(rollouts)
  score = functools.partial(core.score_in_chunks, config, tokens=batch["tokens"],
                            attention_mask=batch["attention_mask"],
                            chunk_size=cfg.score_batch_size, mesh=mesh)
  logprobs = score(params)["logprobs"]
  stats = core.logprob_drift(logprobs, batch["old_logprobs"], batch["completion_mask"])
  if cfg.old_logprobs == "forward":
    batch["old_logprobs"] = logprobs
  if cfg.kl_coef > 0:
    batch["ref_logprobs"] = score(reference)["logprobs"]
  advantages = core.group_advantages(jnp.asarray(rewards), cfg.samples_per_prompt, cfg.normalize)
  batch["advantages"] = np.asarray(advantages)
  stats["zero_advantage_frac"] = float(np.mean(np.abs(batch["advantages"]) < 1e-6))
  return batch, stats


def run_grpo(policy, task, cfg: GRPOConfig, optimizer_cfg, workdir: str,
             on_iteration: Callable[[int, object], dict] | None = None,
             progress: bool = True):
  """Runs (or resumes from `<workdir>/grpo`) GRPO from `policy`; returns (policy, history).

  history: one dict per iteration (reward_mean, drift, losses, times...).
  on_iteration(i, policy) -> dict of extra metrics (e.g. evaluation), recorded in the history.
  """
  if policy.tokenizer is None:
    raise ValueError("GRPO needs a policy with a tokenizer attached")
  task.check_split(cfg.split)
  questions = task.examples(cfg.split)
  if cfg.num_questions is not None:
    questions = [questions[j] for j in range(min(cfg.num_questions, len(questions)))]
  phase_dir = os.path.join(workdir, "grpo")
  ckpt = Checkpointer(phase_dir, policy.config)
  per_iteration = cfg.steps_per_iteration
  if cfg.learning_rate is not None:
    optimizer_cfg = dataclasses.replace(optimizer_cfg, learning_rate=cfg.learning_rate)
  optimizer = make_optimizer(optimizer_cfg, cfg.iterations * per_iteration)
  tree = {"state": create_state(policy.params, optimizer, cfg.seed)}
  if cfg.kl_coef > 0:
    tree["reference"] = core.frozen_reference(policy.params, policy.config)
  meta = {"iteration": 0, "history": []}
  if ckpt.latest_step() is not None:
    tree, meta = ckpt.restore(tree)
  step_fn = make_train_step(grpo_loss(policy.config, cfg, policy.mesh), optimizer, tree["state"],
                            optimizer_cfg.grad_accum_steps)
  logger = MetricsLogger(phase_dir, total=cfg.iterations * per_iteration,
                         initial=meta["iteration"] * per_iteration, desc="grpo",
                         progress=progress)
  minibatch = cfg.minibatch_size or cfg.rows
  try:
    while meta["iteration"] < cfg.iterations:
      i = meta["iteration"]
      state = tree["state"]
      examples = [questions[int(j)] for j in core.iteration_indices(
          len(questions), i, cfg.prompts_per_iteration, cfg.seed)]
      clock = time.perf_counter()
      scored = rollout_examples(policy.replace(params=state.params), task, examples,
                                num_samples=cfg.samples_per_prompt,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
      times = {"time_rollout_s": time.perf_counter() - clock}
      batch, stats = prepare_batch(policy.config, state.params, tree.get("reference"),
                                   scored.rollouts, scored.rewards, cfg, policy.mesh)
      batch = {k: batch[k] for k in ("tokens", "attention_mask", "completion_mask",
                                     "old_logprobs", "advantages", "ref_logprobs") if k in batch}
      times["time_score_s"] = time.perf_counter() - clock - times["time_rollout_s"]
      batch_at = lambda s: {k: v[core.minibatch_rows(cfg.rows, minibatch, s, [cfg.seed, i])]
                            for k, v in batch.items()}
      state, last = run_steps(state, step_fn, batch_at, 0, per_iteration, mesh=policy.mesh,
                              logger=logger, log_every=cfg.log_every,
                              global_offset=i * per_iteration, prefix="grpo/train_")
      times["time_train_s"] = time.perf_counter() - clock - sum(times.values())
      tree = dict(tree, state=state)
      record = {"iteration": i + 1, "reward_mean": float(np.mean(scored.rewards)),
                "completion_length": float(np.mean(scored.rollouts.lengths)), **stats, **times,
                **{k.removeprefix("grpo/train_"): v for k, v in last.items()}}
      meta = core.end_iteration(i, record, tree, meta, current=policy.replace(params=state.params),
                                on_iteration=on_iteration, logger=logger, ckpt=ckpt,
                                prefix="grpo/")
  finally:
    logger.close()
  return policy.replace(params=tree["state"].params), meta["history"]


def run_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return run_grpo(policy, task, GRPOConfig(), optimizer_cfg, workdir,
                  on_iteration=core.eval_callback(evaluate_fn), progress=progress)
