"""GRPO (Shao et al. 2024, DeepSeekMath): PPO's clipped objective without a value model.

Each iteration (`rlthink.algorithms.loop`): sample K completions of each of a batch of training
questions, reward them (the task's verifier by default, or an ORM; see `rlthink.rewards.sources`),
give every token of a completion the group-normalized advantage of its reward ((r - mean of the
K) / std, or without the std: Dr. GRPO), then run `epochs` passes of minibatch updates of the
clipped policy loss, optionally plus kl_coef * KL(policy || reference) with a choice of estimator
(k3 by default, as in the paper). Dense per-step rewards, when configured, are summed into each
completion's reward before the group baseline: GRPO has one advantage per completion.

With one epoch and one minibatch (the default) the update is on-policy: the ratio is 1 and the
loss gradient is the policy gradient. Then (old_logprobs "auto", the default) the old log-probs are
the stop-gradient of the training forward's own, inside the loss: the same loss and gradient as
with a separate scoring forward, without that forward. The sampler's log-probs are checked against
a training forward of the same params (the loss's own when on-policy) and the drift is logged.

Resumable: the checkpoint after each iteration holds the train state and, when kl_coef > 0, the
reference params; the JSON meta holds the iteration and the history.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlthink.algorithms import loop, rl_math, scoring, stages
from rlthink.algorithms.config import IterationConfig

OLD_LOGPROBS = ("auto", "forward", "rollout")
TRAIN_KEYS = ("tokens", "attention_mask", "completion_mask", "old_logprobs", "advantages",
              "ref_logprobs")


@dataclasses.dataclass(frozen=True)
class GRPOConfig(IterationConfig):
  """GRPO settings; the rollout, reward and schedule fields are `IterationConfig`'s
  (samples_per_prompt is the group size K).

  clip_eps (clip_eps_high): ratio clip range.
  kl_coef: weight of the KL-to-reference loss term (0: no reference model); kl_estimator: "k1",
    "k2" or "k3".
  normalize: "std" (divide by the group's std) or "none".
  aggregation: "sequence_mean" (the paper), "token_mean" or "token_sum_norm".
  entropy_coef: weight of an entropy bonus (0: logged only).
  old_logprobs: where the ratio's old log-probs come from. "forward": a scoring forward over the
    batch before the update; "rollout": the sampler's; "auto" (default): when the iteration makes
    one optimizer step on its batch (`on_policy`: one epoch, one minibatch), the stop-gradient of
    the training forward's own log-probs inside the loss (ratio exactly 1, the same gradient, no
    scoring forward; the drift is then a train metric: with gradient accumulation, the mean over
    the micro-batches of each one's mean and max), else "forward".
  """

  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  normalize: str = "std"
  aggregation: str = "sequence_mean"
  entropy_coef: float = 0.0
  old_logprobs: str = "auto"

  def __post_init__(self):
    super().__post_init__()
    rl_math.check_choice("GRPOConfig.kl_estimator", self.kl_estimator, rl_math.KL_ESTIMATORS)
    rl_math.check_choice("GRPOConfig.normalize", self.normalize, rl_math.GROUP_NORMALIZATIONS)
    rl_math.check_choice("GRPOConfig.aggregation", self.aggregation, rl_math.AGGREGATIONS)
    rl_math.check_choice("GRPOConfig.old_logprobs", self.old_logprobs, OLD_LOGPROBS)
    if self.samples_per_prompt < 2:
      raise ValueError(f"GRPOConfig: samples_per_prompt={self.samples_per_prompt} (a group needs "
                       ">= 2)")
    if self.clip_eps <= 0 or self.kl_coef < 0:
      raise ValueError(f"GRPOConfig: clip_eps={self.clip_eps} must be > 0 and kl_coef="
                       f"{self.kl_coef} >= 0")

  @property
  def old_logprobs_source(self) -> str:
    """"loss" (auto and on-policy: the stop-gradient of the loss's own forward), "forward" or
    "rollout"."""
    if self.old_logprobs == "auto":
      return "loss" if self.on_policy else "forward"
    return self.old_logprobs


def grpo_loss(config, cfg: GRPOConfig, mesh=None):
  """loss_fn(params, batch, rng) -> (loss, metrics) for `rlthink.train.make_train_step`.

  batch (token frame, see `rl_math`): tokens, attention_mask [B, T]; completion_mask,
  old_logprobs [B, T-1]; advantages float[B]; ref_logprobs [B, T-1] when cfg.kl_coef > 0.
  loss = clipped policy loss + kl_coef * KL - entropy_coef * entropy.
  When `cfg.old_logprobs_source` is "loss", the batch's old_logprobs are the sampler's: the ratio
  takes the stop-gradient of this forward's log-probs instead, and the metrics add the drift.
  """
  on_policy = cfg.old_logprobs_source == "loss"

  def loss_fn(params, batch, rng):
    del rng
    tokens, mask = batch["tokens"], batch["completion_mask"]
    scores = scoring.forward_scores(config, params, tokens, batch["attention_mask"],
                                    with_entropy=True, mesh=mesh)
    logprobs = scores["logprobs"]
    # On-policy, the params that sampled are these: ratio exactly 1, gradient grad log pi.
    old = jax.lax.stop_gradient(logprobs) if on_policy else batch["old_logprobs"]
    loss, metrics = rl_math.clipped_policy_loss(logprobs, old, batch["advantages"], mask,
                                                cfg.clip_eps, cfg.clip_eps_high, cfg.aggregation)
    metrics["policy_loss"] = loss
    if on_policy:
      metrics.update(scoring.logprob_drift_metrics(logprobs, batch["old_logprobs"], mask))
    if cfg.kl_coef > 0:
      kl = rl_math.aggregate(rl_math.kl_estimate(logprobs, batch["ref_logprobs"],
                                                 cfg.kl_estimator), mask, cfg.aggregation)
      loss = loss + cfg.kl_coef * kl
      metrics["kl"] = kl
    entropy = rl_math.entropy_bonus(scores["entropy"], mask, cfg.aggregation)
    if cfg.entropy_coef == 0:
      entropy = jax.lax.stop_gradient(entropy)  # a metric only
    metrics["entropy"] = entropy
    return loss - cfg.entropy_coef * entropy, metrics

  return loss_fn


def prepare_batch(config, params, reference, rollouts, rewards: np.ndarray, cfg: GRPOConfig,
                  mesh=None) -> tuple[dict, dict]:
  """The training batch (`TRAIN_KEYS`, numpy) of one rollout batch and its rewards float[N],
  with its stats (the fraction of zero advantages; the drift, unless the loss logs it).

  old_logprobs: the sampler's, or ("forward") a scoring forward's of `params`. On-policy
  (`cfg.old_logprobs_source` "loss") nothing is scored here but the reference's log-probs.
  """
  batch = rollouts.train_arrays()
  score = functools.partial(scoring.score_in_chunks, config, tokens=batch["tokens"],
                            attention_mask=batch["attention_mask"],
                            chunk_size=cfg.score_batch_size, mesh=mesh)
  stats = {}
  if cfg.old_logprobs_source != "loss":
    logprobs = score(params)["logprobs"]
    stats = scoring.logprob_drift(logprobs, batch["old_logprobs"], batch["completion_mask"])
    if cfg.old_logprobs_source == "forward":
      batch["old_logprobs"] = logprobs
  if cfg.kl_coef > 0:
    batch["ref_logprobs"] = score(reference)["logprobs"]
  advantages = rl_math.group_advantages(jnp.asarray(rewards), cfg.samples_per_prompt,
                                        cfg.normalize)
  batch["advantages"] = np.asarray(advantages)
  stats["zero_advantage_frac"] = float(np.mean(np.abs(batch["advantages"]) < 1e-6))
  return {k: batch[k] for k in TRAIN_KEYS if k in batch}, stats


def run_grpo(policy, task, cfg: GRPOConfig, optimizer_cfg, directory: str, *,
             examples: Sequence[dict] | None = None, evaluate: Callable | None = None,
             reward_models: Mapping | None = None, progress: bool = True):
  """Runs (or resumes from `directory`) GRPO from `policy`; returns (policy, history).

  history: one dict per iteration (reward_mean, drift, losses, times...). The keyword arguments
  are every driver's (`rlthink.algorithms.stages`).
  """
  def prepare(it: loop.Iteration):
    rewards = it.rewards.final
    if it.rewards.dense is not None:  # one advantage per completion: its total reward
      rewards = rewards + np.sum(it.rewards.dense, axis=1)
    return prepare_batch(policy.config, it.tree["state"].params, it.tree.get("reference"),
                         it.scored.rollouts, rewards, cfg, policy.mesh)

  update = loop.policy_update("grpo", policy, cfg, optimizer_cfg,
                              grpo_loss(policy.config, cfg, policy.mesh), prepare)
  return loop.run_iterations(policy, task, cfg, directory, update, examples=examples,
                             evaluate=evaluate, reward_models=reward_models, progress=progress)


def run_stage(policy, cfg: GRPOConfig, ctx):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return stages.run_as_stage(run_grpo, policy, cfg, ctx)
