"""PPO with a value model (Havrilla et al. 2024, after Ziegler et al. 2019 / Ouyang et al. 2022).

Each iteration (`rlthink.algorithms.loop`): sample completions of a batch of training questions
with the current policy, reward them (the task's verifier by default, or an ORM, plus optional
dense per-step rewards; see `rlthink.rewards.sources`), build per-token rewards (the final reward
on the last token, plus the dense rewards on their tokens, minus kl_coef * KL to the frozen
reference policy on every token), estimate advantages with GAE on the value model's values, then
run `epochs` passes of clipped-policy + clipped-value (+ entropy) minibatch updates. The KL
coefficient is fixed or adaptive (`kl_target`).

The value model is either a separate copy of the initial policy with a value head
(`value_model="separate"`, its own learning rate) or the policy's own trunk with a value head
(`value_model="shared"`). The value head starts at zero (V = 0).

The rollout's log-probs (from the sampler's cached decode) are checked against a forward pass of
the same params every iteration; the drift is logged (`logprob_drift_mean/max`).

Resumable: the checkpoint after each iteration holds the train state (policy, value, both
optimizer states, rng), the reference params and the KL controller; the JSON meta holds the
iteration and the history. Data positions are pure functions of (seed, iteration), so a resumed run
is exactly the uninterrupted one.

The module needs neither gin nor the task pipeline (grain), so the benchmark (`rlthink.bench.ppo`)
runs on images without them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlthink import ops
from rlthink.algorithms import loop, rl_math, scoring, stages
from rlthink.algorithms.config import IterationConfig, stage_optimizer
from rlthink.models import decoder, lora
from rlthink.train import make_optimizer

VALUE_MODELS = ("separate", "shared")
OLD_LOGPROBS = ("forward", "rollout")
VALUE_HEAD = ("value_head", "value_bias")
TRAIN_KEYS = ("tokens", "attention_mask", "completion_mask", "old_logprobs", "old_values",
              "advantages", "returns")


@dataclasses.dataclass(frozen=True)
class PPOConfig(IterationConfig):
  """PPO settings; the rollout, reward and schedule fields are `IterationConfig`'s.

  clip_eps (clip_eps_high): policy-ratio clip range; value_clip_eps: value clip (None: off).
  vf_coef, entropy_coef: weights of the value loss and of the entropy bonus.
  gamma, lam: GAE discount and lambda.
  kl_coef: initial KL-penalty coefficient; kl_target: None for a fixed coefficient, else the
    per-sequence KL the adaptive controller steers to (with kl_horizon); kl_estimator: the
    per-token KL in the reward ("k1", "k2", "k3").
  whiten_advantages: normalize advantages over the rollout batch.
  aggregation: how token losses reduce ("token_mean", "sequence_mean", "token_sum_norm").
  value_model: "separate" (own params, `value_learning_rate`, default the policy's) or "shared".
  old_logprobs: "forward" (recompute with a training forward: exact ratios) or "rollout" (the
    sampler's); the drift between the two is logged either way.
  """

  prompts_per_iteration: int = 64
  samples_per_prompt: int = 1
  epochs: int = 2
  minibatch_size: int | None = 32
  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  value_clip_eps: float | None = 0.2
  vf_coef: float = 0.5
  entropy_coef: float = 0.0
  gamma: float = 1.0
  lam: float = 0.95
  kl_coef: float = 0.05
  kl_target: float | None = None
  kl_horizon: float = 10_000.0
  kl_estimator: str = "k1"
  whiten_advantages: bool = True
  aggregation: str = "token_mean"
  value_model: str = "separate"
  value_learning_rate: float | None = None
  old_logprobs: str = "forward"

  def __post_init__(self):
    super().__post_init__()
    rl_math.check_choice("PPOConfig.value_model", self.value_model, VALUE_MODELS)
    rl_math.check_choice("PPOConfig.old_logprobs", self.old_logprobs, OLD_LOGPROBS)
    rl_math.check_choice("PPOConfig.kl_estimator", self.kl_estimator, rl_math.KL_ESTIMATORS)
    rl_math.check_choice("PPOConfig.aggregation", self.aggregation, rl_math.AGGREGATIONS)
    if self.clip_eps <= 0 or self.kl_coef < 0 or not 0 <= self.lam <= 1 or not (
        0 <= self.gamma <= 1) or (self.kl_target is not None and self.kl_target <= 0):
      raise ValueError(f"PPOConfig: clip_eps={self.clip_eps} (> 0), kl_coef={self.kl_coef} "
                       f"(>= 0), gamma={self.gamma} and lam={self.lam} (in [0, 1]), "
                       f"kl_target={self.kl_target} (> 0 or None)")


# ------------------------------------------------------------------------------------------------
# Parameters: the policy, the value model, the value head.


def add_value_head(params, config, mesh=None, drop_lm_head: bool = False):
  """`params` plus a zero value head (value_head [E], value_bias []); optionally without lm_head
  (a separate value model never computes logits)."""
  out = {k: v for k, v in params.items() if not (drop_lm_head and k == "lm_head")}
  shapes, _ = decoder.abstract_params(config, ("value",))
  shardings = None if mesh is None else decoder.param_shardings(config, mesh, ("value",))
  for key in VALUE_HEAD:
    zero = jnp.zeros(shapes[key].shape, shapes[key].dtype)
    out[key] = zero if shardings is None else jax.device_put(zero, shardings[key])
  return out


def strip_value_head(params):
  """The policy params alone (the value head removed, when there is one)."""
  return {k: v for k, v in params.items() if k not in VALUE_HEAD}


def initial_params(policy, cfg: PPOConfig) -> dict:
  """{"policy": ..., "value": ...} (separate) or {"policy": trunk with value head} (shared)."""
  if cfg.value_model == "shared":
    return {"policy": add_value_head(policy.params, policy.config, policy.mesh)}
  return {"policy": policy.params,
          "value": add_value_head(policy.params, policy.config, policy.mesh, drop_lm_head=True)}


def _per_model(fn) -> optax.GradientTransformation:
  """A stateless transformation: updates {model: tree} -> {model: fn(model, tree)}."""
  return optax.GradientTransformation(
      lambda params: optax.EmptyState(),
      lambda updates, state, params=None: ({k: fn(k, u) for k, u in updates.items()}, state))


def clip_per_model(max_norm: float) -> optax.GradientTransformation:
  """Clips the updates of each model ({"policy", "value"}) to global norm `max_norm` on its own;
  stateless, so an optimizer chained after it keeps a state that mirrors the params."""
  clip = optax.clip_by_global_norm(max_norm)
  return _per_model(lambda k, u: clip.update(u, optax.EmptyState())[0])


def make_ppo_optimizer(optimizer_cfg, cfg: PPOConfig, total_steps: int):
  """The optimizer over {"policy", "value"}: gradients clipped per model (clip_norm), then the
  AdamW of `optimizer_cfg` with the stage's overrides (`stage_optimizer`) at the policy's rate,
  the value model's updates rescaled to its own rate (value_learning_rate, else the policy's).

  Stateless per-model steps around one AdamW (rather than optax.multi_transform) keep the
  optimizer state a plain mirror of the params, which the sharded `create_state` needs.
  """
  optimizer_cfg = stage_optimizer(optimizer_cfg, cfg)
  policy_lr = optimizer_cfg.learning_rate
  scale = {"policy": 1.0, "value": (cfg.value_learning_rate or policy_lr) / policy_lr}
  adamw = make_optimizer(dataclasses.replace(optimizer_cfg, clip_norm=None), total_steps)
  return optax.chain(clip_per_model(optimizer_cfg.clip_norm or float("inf")), adamw,
                     _per_model(lambda k, u: jax.tree.map(lambda x: x * scale[k], u)))


# ------------------------------------------------------------------------------------------------
# The loss and the advantages: pure functions.


def ppo_loss(config, cfg: PPOConfig, mesh=None):
  """loss_fn(params, batch, rng) -> (loss, metrics) for `rlthink.train.make_train_step`.

  params: {"policy", "value"} or {"policy"} (shared trunk). batch (token frame, see `rl_math`):
  tokens, attention_mask [B, T]; completion_mask, old_logprobs, old_values, advantages,
  returns [B, T-1]. loss = clipped policy loss + vf_coef * clipped value loss
  - entropy_coef * entropy.
  """

  def loss_fn(params, batch, rng):
    del rng
    tokens, attention = batch["tokens"], batch["attention_mask"]
    score = functools.partial(scoring.forward_scores, config, tokens=tokens,
                              attention_mask=attention, with_entropy=True, mesh=mesh)
    if "value" in params:
      scores = score(params["policy"], heads=("logits",))
      scores["values"] = score(params["value"], heads=("value",))["values"]
    else:
      scores = score(params["policy"], heads=("logits", "value"))
    mask = batch["completion_mask"]
    pg_loss, pg_metrics = rl_math.clipped_policy_loss(
        scores["logprobs"], batch["old_logprobs"], batch["advantages"], mask, cfg.clip_eps,
        cfg.clip_eps_high, cfg.aggregation)
    vf_loss, vf_metrics = rl_math.clipped_value_loss(scores["values"], batch["old_values"],
                                                  batch["returns"], mask, cfg.value_clip_eps,
                                                  cfg.aggregation)
    entropy = rl_math.entropy_bonus(scores["entropy"], mask, cfg.aggregation)
    if cfg.entropy_coef == 0:
      entropy = jax.lax.stop_gradient(entropy)  # a metric only
    loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy
    return loss, {"policy_loss": pg_loss, "value_loss": vf_loss, "entropy": entropy,
                  **pg_metrics, **vf_metrics}

  return loss_fn


@functools.partial(jax.jit, static_argnames=("gamma", "lam", "kl_estimator", "whiten"))
def compute_advantages(batch: dict, final_rewards: jax.Array, kl_coef: jax.Array, *,
                       gamma: float, lam: float, kl_estimator: str, whiten: bool):
  """Per-token rewards -> GAE. batch needs completion_mask, old_logprobs, ref_logprobs and
  old_values [B, T-1], optionally dense_rewards [B, T-1] (added to the per-token rewards);
  final_rewards float[B]. Returns (advantages, returns, stats)."""
  mask = batch["completion_mask"]
  kl = rl_math.kl_estimate(batch["old_logprobs"], batch["ref_logprobs"], kl_estimator) * mask
  rewards = rl_math.per_token_rewards(final_rewards, mask, kl, kl_coef)
  if "dense_rewards" in batch:
    rewards = rewards + jnp.where(mask, batch["dense_rewards"], 0.0)
  advantages, returns = rl_math.compute_gae(rewards, batch["old_values"], mask, gamma, lam)
  stats = {"kl": jnp.mean(jnp.sum(kl, axis=1)),  # per sequence
           "return_mean": ops.masked_mean(returns, mask),
           "value_mean": ops.masked_mean(batch["old_values"], mask),
           "advantage_std": jnp.sqrt(ops.masked_mean(jnp.square(
               advantages - ops.masked_mean(advantages, mask)), mask))}
  if whiten:
    advantages = rl_math.whiten(advantages, mask)
  return advantages, returns, stats


def score_rollouts(config, params: dict, reference, rollouts, cfg: PPOConfig,
                   mesh=None) -> tuple[dict, dict]:
  """`Rollouts.train_arrays` plus the forward scores: old_logprobs (policy), ref_logprobs,
  old_values [N, T-1]. Returns (batch of numpy arrays, {logprob_drift_mean, logprob_drift_max})."""
  batch = rollouts.train_arrays()
  score = functools.partial(scoring.score_in_chunks, config, tokens=batch["tokens"],
                            attention_mask=batch["attention_mask"],
                            chunk_size=cfg.score_batch_size, mesh=mesh)
  shared = "value" not in params
  policy_scores = score(params["policy"], heads=("logits", "value") if shared else ("logits",))
  values = policy_scores["values"] if shared else score(params["value"], heads=("value",))["values"]
  stats = scoring.logprob_drift(policy_scores["logprobs"], batch["old_logprobs"],
                                batch["completion_mask"])
  if cfg.old_logprobs == "forward":
    batch["old_logprobs"] = policy_scores["logprobs"]
  batch["ref_logprobs"] = score(reference, heads=("logits",))["logprobs"]
  batch["old_values"] = values
  return batch, stats


def add_advantages(batch: dict, final_rewards: np.ndarray, kl_coef, cfg: PPOConfig,
                   dense_rewards: np.ndarray | None = None) -> tuple[dict, dict]:
  """The training batch (`TRAIN_KEYS`, numpy) of a scored batch, final rewards float[N] and
  optional dense per-token rewards float[N, T-1], with stats (per-sequence KL, mean return and
  value, advantage std before whitening)."""
  inputs = {k: batch[k] for k in ("completion_mask", "old_logprobs", "ref_logprobs",
                                  "old_values")}
  if dense_rewards is not None:
    inputs["dense_rewards"] = np.asarray(dense_rewards, np.float32)
  advantages, returns, stats = compute_advantages(
      inputs, jnp.asarray(final_rewards, jnp.float32), jnp.asarray(kl_coef, jnp.float32),
      gamma=cfg.gamma, lam=cfg.lam, kl_estimator=cfg.kl_estimator,
      whiten=cfg.whiten_advantages)
  batch = dict(batch, advantages=np.asarray(advantages), returns=np.asarray(returns))
  return {k: batch[k] for k in TRAIN_KEYS}, {k: float(v) for k, v in
                                             jax.device_get(stats).items()}


# ------------------------------------------------------------------------------------------------
# The driver.


def run_ppo(policy, task, cfg: PPOConfig, optimizer_cfg, directory: str, *,
            examples: Sequence[dict] | None = None, evaluate: Callable | None = None,
            reward_models: Mapping | None = None, progress: bool = True):
  """Runs (or resumes from `directory`) PPO from `policy`; returns (policy, history).

  history: one dict per iteration (reward_mean, kl, kl_coef, logprob drift, losses...). The
  keyword arguments are every driver's (`rlthink.algorithms.stages`).
  """
  policy = lora.full_finetuning(policy, optimizer_cfg.lora, "PPO")
  optimizer = make_ppo_optimizer(optimizer_cfg, cfg, cfg.iterations * cfg.steps_per_iteration)

  def prepare(it: loop.Iteration):
    coef = it.tree["kl"].coef
    batch, stats = score_rollouts(policy.config, it.tree["state"].params, it.tree["reference"],
                                  it.scored.rollouts, cfg, policy.mesh)
    batch, adv_stats = add_advantages(batch, it.rewards.final, coef, cfg, it.rewards.dense)
    return batch, {"kl_coef": float(coef), **stats, **adv_stats}

  def after_update(tree, stats):
    return dict(tree, kl=rl_math.update_kl_controller(tree["kl"], stats["kl"], cfg.rows,
                                                      cfg.kl_target, cfg.kl_horizon))

  update = loop.Update(
      name="ppo", loss_fn=ppo_loss(policy.config, cfg, policy.mesh), optimizer=optimizer,
      grad_accum_steps=optimizer_cfg.grad_accum_steps, params=initial_params(policy, cfg),
      frozen={"reference": scoring.frozen_reference(policy.params, policy.config),
              "kl": rl_math.init_kl_controller(cfg.kl_coef)},
      prepare=prepare, policy_params=lambda params: strip_value_head(params["policy"]),
      after_update=after_update)
  return loop.run_iterations(policy, task, cfg, directory, update, examples=examples,
                             evaluate=evaluate, reward_models=reward_models, progress=progress)


def run_stage(policy, cfg: PPOConfig, ctx):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return stages.run_as_stage(run_ppo, policy, cfg, ctx)
