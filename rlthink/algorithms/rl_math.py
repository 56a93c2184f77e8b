"""The RL math every algorithm shares: advantages, KL, clipped losses, the KL controller.

Pure array functions (jit-friendly, no hidden state). PPO, GRPO and START differ only in how they
combine these; each piece exists once, here.

The token frame. A rollout batch is `tokens int32[B, T]` = prompt | completion (see
`rlthink.sampling.rollouts`). Every per-token array of the RL math has T - 1 columns, the frame of
`ops.next_token_logprobs`: column t is about token t + 1, predicted from position t. So
`logprobs[:, t]` = log pi(tokens[:, t+1] | tokens[:, :t+1]), `values[:, t]` = V(tokens[:, :t+1])
(the value head's output at column t), and `completion_mask[:, t]` is True where token t + 1 was
sampled by the policy (an action). Masked-out columns are not steps of the decision process.

Aggregations over a token mask (`aggregate`): "token_mean" (every token of the batch weighs the
same), "sequence_mean" (mean per sequence, then over sequences), "token_sum_norm" (sum divided by
batch * columns: a constant normalizer, no length bias, as in Dr. GRPO).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from rlthink import ops

AGGREGATIONS = ("token_mean", "sequence_mean", "token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
GROUP_NORMALIZATIONS = ("std", "none")


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
  """Returns `value`, or raises a ValueError naming the option `name` and its choices."""
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
  return value


def aggregate(x: jax.Array, mask: jax.Array, mode: str = "token_mean") -> jax.Array:
  """Reduces per-token x float[B, T'] over mask [B, T'] to a scalar (see the module docstring)."""
  check_choice("aggregation", mode, AGGREGATIONS)
  mask = mask.astype(jnp.float32)
  if mode == "token_mean":
    return ops.masked_mean(x, mask)
  if mode == "sequence_mean":
    per_row = ops.masked_mean(x, mask, axis=-1)
    has_tokens = (jnp.sum(mask, axis=-1) > 0).astype(jnp.float32)
    return ops.masked_mean(per_row, has_tokens)
  return ops.masked_sum(x, mask) / x.size


# ------------------------------------------------------------------------------------------------
# Advantages.


def compute_gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimation as a reverse `lax.scan` over the columns.

  rewards, values: float[B, T']; mask [B, T'] (True on the steps of each row's episode). Over the
  masked-in steps of a row (masked-out columns are skipped, not zero-reward steps):
  delta_t = r_t + gamma V_{t'} - V_t with t' the next masked-in step (V = 0 after the last one:
  the episode ends), A_t = delta_t + gamma lam A_{t'}. Returns (advantages, returns = A + V),
  float32[B, T'], both 0 where the mask is False.
  """
  mask = mask.astype(bool)
  rewards, values = rewards.astype(jnp.float32), values.astype(jnp.float32)

  def step(carry, column):
    next_adv, next_value = carry
    r, v, m = column
    adv = r + gamma * next_value - v + gamma * lam * next_adv
    carry = (jnp.where(m, adv, next_adv), jnp.where(m, v, next_value))
    return carry, jnp.where(m, adv, 0.0)

  zero = jnp.zeros(rewards.shape[:1], jnp.float32)
  _, adv_t = jax.lax.scan(step, (zero, zero), (rewards.T, values.T, mask.T), reverse=True)
  advantages = adv_t.T
  return advantages, jnp.where(mask, advantages + values, 0.0)


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
  """(x - mean) / std over the masked entries (population std); 0 where the mask is False."""
  mask = mask.astype(jnp.float32)
  mean = ops.masked_mean(x, mask)
  var = ops.masked_mean(jnp.square(x - mean), mask)
  out = (x - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out = out + mean
  return out * mask


def group_advantages(rewards: jax.Array, group_size: int, normalize: str = "std",
                     eps: float = 1e-6) -> jax.Array:
  """GRPO's advantages: each reward minus its group's mean (divided by the group's std).

  rewards: float[N], rows i*group_size .. (i+1)*group_size-1 are the samples of prompt i (the
  `Rollouts` row order). normalize: "std" ((r - mean) / (std + eps), population std) or "none"
  (r - mean, Dr. GRPO). Returns float32[N]; a group whose rewards are all equal gets 0.
  """
  check_choice("normalize", normalize, GROUP_NORMALIZATIONS)
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1 or group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"group_advantages: rewards must be float[N] with N a multiple of "
                     f"group_size={group_size}, got shape {rewards.shape}")
  groups = rewards.reshape(-1, group_size)
  centered = groups - jnp.mean(groups, axis=1, keepdims=True)
  if normalize == "std":
    centered = centered / (jnp.std(groups, axis=1, keepdims=True) + eps)
  return centered.reshape(-1)


# ------------------------------------------------------------------------------------------------
# KL to the reference policy, per-token rewards, the KL controller.


def kl_estimate(logprobs: jax.Array, ref_logprobs: jax.Array, estimator: str = "k3") -> jax.Array:
  """Per-token estimate of KL(pi || ref) from log-probs of tokens sampled from pi.

  With d = ref_logprobs - logprobs: "k1" = -d (unbiased, can be negative), "k2" = d^2 / 2 (low
  variance, biased), "k3" = exp(d) - d - 1 (unbiased and >= 0). Differentiable in both inputs.
  """
  check_choice("kl_estimator", estimator, KL_ESTIMATORS)
  d = ref_logprobs.astype(jnp.float32) - logprobs.astype(jnp.float32)
  if estimator == "k1":
    return -d
  if estimator == "k2":
    return 0.5 * jnp.square(d)
  return jnp.expm1(d) - d


def last_token_mask(mask: jax.Array) -> jax.Array:
  """float32[B, T']: 1 at the last True column of each row of mask [B, T'] (none if empty)."""
  mask = jnp.asarray(mask).astype(bool)
  cols = jnp.arange(mask.shape[-1])
  last = jnp.max(jnp.where(mask, cols, -1), axis=-1, keepdims=True)
  return (cols == last).astype(jnp.float32)


def per_token_rewards(final_rewards: jax.Array, mask: jax.Array, kl: jax.Array | None = None,
                      kl_coef: float | jax.Array = 0.0) -> jax.Array:
  """PPO's per-token rewards: the sparse final reward on each row's last action, minus the KL
  penalty kl_coef * kl on every action.

  final_rewards: float[B]; mask [B, T'] (actions); kl: float[B, T'] per-token KL to the reference
  (usually `kl_estimate(old_logprobs, ref_logprobs, "k1")`) or None. Returns float32[B, T'].
  """
  mask_f = jnp.asarray(mask).astype(jnp.float32)
  rewards = jnp.asarray(final_rewards, jnp.float32)[:, None] * last_token_mask(mask)
  if kl is not None:
    rewards = rewards - kl_coef * kl.astype(jnp.float32) * mask_f
  return rewards


@functools.partial(jax.tree_util.register_dataclass, data_fields=["coef"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class KLController:
  """The KL-penalty coefficient as a pytree (checkpointed with the train state).

  coef: float32[]. Updated by `update_kl_controller`; fixed when no target is given.
  """

  coef: jax.Array


def init_kl_controller(coef: float) -> KLController:
  if coef < 0:
    raise ValueError(f"the KL coefficient must be >= 0, got {coef}")
  return KLController(coef=jnp.asarray(coef, jnp.float32))


def update_kl_controller(ctl: KLController, observed_kl, num_samples: int,
                         target: float | None = None, horizon: float = 10_000.0) -> KLController:
  """The adaptive controller of Ziegler et al. (2019): with e = clip(observed_kl / target - 1,
  -0.2, 0.2), coef <- coef * (1 + e * num_samples / horizon). `target=None`: fixed coefficient.

  observed_kl: the mean KL per sequence (summed over its tokens) of the last batch.
  """
  if target is None:
    return ctl
  if target <= 0 or horizon <= 0:
    raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
  error = jnp.clip(jnp.asarray(observed_kl, jnp.float32) / target - 1.0, -0.2, 0.2)
  return KLController(coef=ctl.coef * (1.0 + error * num_samples / horizon))


# ------------------------------------------------------------------------------------------------
# Losses.


def clipped_policy_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
                        mask: jax.Array, clip_eps: float = 0.2, clip_eps_high: float | None = None,
                        aggregation: str = "token_mean") -> tuple[jax.Array, dict]:
  """The clipped surrogate: aggregate of max(-A r, -A clip(r, 1 - eps, 1 + eps_high)) over mask.

  logprobs: float[B, T'] under the policy being trained (with gradient); old_logprobs: under the
  policy that sampled (no gradient); advantages: float[B, T'] per token or float[B] per sequence;
  r = exp(logprobs - old_logprobs). clip_eps_high: the upper clip (default clip_eps).
  Returns (loss, metrics: clip_frac, approx_kl (k3 of old vs new), ratio_mean).
  """
  mask = mask.astype(jnp.float32)
  if advantages.ndim == 1:
    advantages = advantages[:, None]
  advantages = jax.lax.stop_gradient(advantages.astype(jnp.float32))
  old_logprobs = jax.lax.stop_gradient(old_logprobs.astype(jnp.float32))
  log_ratio = logprobs.astype(jnp.float32) - old_logprobs
  ratio = jnp.exp(log_ratio)
  high = clip_eps if clip_eps_high is None else clip_eps_high
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + high)
  loss = aggregate(jnp.maximum(unclipped, clipped), mask, aggregation)
  stopped = jax.lax.stop_gradient(log_ratio)
  metrics = {"clip_frac": ops.masked_mean((clipped > unclipped).astype(jnp.float32), mask),
             "approx_kl": ops.masked_mean(jnp.expm1(stopped) - stopped, mask),
             "ratio_mean": ops.masked_mean(jnp.exp(stopped), mask)}
  return loss, metrics


def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
                       mask: jax.Array, clip_eps: float | None = 0.2,
                       aggregation: str = "token_mean") -> tuple[jax.Array, dict]:
  """aggregate of 0.5 max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2) over mask.

  values: float[B, T'] (with gradient); old_values: at sampling time; returns: the targets
  (GAE's A + V_old). clip_eps=None: the plain 0.5 (V - R)^2. Returns (loss, {"value_clip_frac"}).
  """
  mask = mask.astype(jnp.float32)
  values = values.astype(jnp.float32)
  old_values = jax.lax.stop_gradient(old_values.astype(jnp.float32))
  returns = jax.lax.stop_gradient(returns.astype(jnp.float32))
  plain = jnp.square(values - returns)
  if clip_eps is None:
    return 0.5 * aggregate(plain, mask, aggregation), {"value_clip_frac": jnp.zeros(())}
  clipped = jnp.square(old_values + jnp.clip(values - old_values, -clip_eps, clip_eps) - returns)
  loss = 0.5 * aggregate(jnp.maximum(plain, clipped), mask, aggregation)
  return loss, {"value_clip_frac": ops.masked_mean((clipped > plain).astype(jnp.float32), mask)}


def entropy_bonus(entropy: jax.Array, mask: jax.Array,
                  aggregation: str = "token_mean") -> jax.Array:
  """Aggregate policy entropy over mask; entropy float[B, T'] per token in the token frame
  (`forward_scores(..., with_entropy=True)["entropy"]`, or `ops.entropy(logits[:, :-1])`).
  Subtract coef * this from the loss to encourage exploration."""
  return aggregate(entropy, mask, aggregation)
