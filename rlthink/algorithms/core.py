"""The RL math every algorithm shares: advantages, KL, clipped losses, the KL controller, batches.

Pure array functions (jit-friendly, no hidden state). PPO, GRPO, START and RCRL differ only in how
they combine these; each piece exists once, here.

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
import numpy as np

from rlthink import distributed, ops, sharding
from rlthink.models import decoder

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


def frozen_reference(params, config):
  """A frozen copy of `params` for the reference policy: weights in the compute dtype (norm
  scales unchanged), which is what the forward reads anyway, so the reference's log-probs are
  the same while it takes half the memory of float32 master weights (2 of 4 bytes per
  parameter: 15 GB, not 30, for a 7B policy). A new buffer, never donated with the train state.
  """
  from rlthink.sampling import engine
  return engine.params_for_sampling(params, config, unroll=False)


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


# ------------------------------------------------------------------------------------------------
# From rollouts to training arrays.


def rollout_batch(rollouts) -> dict[str, np.ndarray]:
  """The training arrays of a `Rollouts`, in the token frame (numpy).

  Returns tokens int32[N, T] (T = P + C), attention_mask bool[N, T], completion_mask bool[N, T-1]
  (True where column t predicts a sampled completion token) and old_logprobs float32[N, T-1] (the
  sampler's log-probs at temperature 1, 0 elsewhere).
  """
  p = rollouts.prompt_tokens.shape[1]
  n = rollouts.prompt_tokens.shape[0]
  lead = lambda dtype: np.zeros((n, p - 1), dtype)
  return {"tokens": np.asarray(rollouts.tokens, np.int32),
          "attention_mask": np.asarray(rollouts.mask, bool),
          "completion_mask": np.concatenate([lead(bool), np.asarray(rollouts.completion_mask,
                                                                   bool)], axis=1),
          "old_logprobs": np.concatenate([lead(np.float32), np.asarray(rollouts.logprobs,
                                                                       np.float32)], axis=1)}


def forward_scores(config, params, tokens: jax.Array, attention_mask: jax.Array, *,
                   heads: tuple[str, ...] = ("logits",), with_entropy: bool = False, mesh=None,
                   chunk_size: int = 128) -> dict:
  """One forward in the token frame, for the RL losses and scoring: {"logprobs": float32[B, T-1]
  (log-prob of tokens[:, t+1] at t), "entropy": float32[B, T-1] (with_entropy)} when "logits" is
  in heads, {"values": float32[B, T-1]} when "value" is (V of each prefix tokens[:, :t+1]).

  The log-probs and entropy come from the hidden states in chunks of positions
  (`ops.chunked_next_token_logprobs`): the float32 logits [B, T, V] never exist whole.
  """
  trunk_heads = tuple(h for h in heads if h != "logits")
  if "logits" in heads:
    trunk_heads = ("hidden",) + trunk_heads
  out, _ = decoder.forward(config, params, tokens, attention_mask=attention_mask,
                           heads=trunk_heads, mesh=mesh)
  scores = {}
  if "logits" in heads:
    logp, ent = ops.chunked_next_token_logprobs(out["hidden"], decoder.unembedding(config, params),
                                                tokens, chunk_size, with_entropy)
    scores["logprobs"] = logp
    if with_entropy:
      scores["entropy"] = ent
  if "value" in heads:
    scores["values"] = out["value"][:, :-1]
  return scores


@functools.partial(jax.jit, static_argnames=("config", "heads", "mesh"))
def score_tokens(config, params, tokens: jax.Array, attention_mask: jax.Array,
                 heads: tuple[str, ...] = ("logits",), mesh=None) -> dict:
  """`forward_scores` jitted, without the entropy: {"logprobs"} and/or {"values"} [B, T-1]."""
  return forward_scores(config, params, tokens, attention_mask, heads=heads, mesh=mesh)


def score_in_chunks(config, params, tokens: np.ndarray, attention_mask: np.ndarray,
                    heads: tuple[str, ...] = ("logits",), chunk_size: int = 32,
                    mesh=None) -> dict[str, np.ndarray]:
  """`score_tokens` over row chunks of one shape (the last chunk padded), as numpy arrays: the
  whole rollout batch is scored without materializing [N, T, V] logits at once. On a mesh, make
  chunk_size a multiple of the batch shards (data * fsdp)."""
  n = tokens.shape[0]
  chunk_size = max(1, min(chunk_size, n))
  put = (lambda x: jnp.asarray(x)) if mesh is None else (
      lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.shape)))
  parts: dict[str, list] = {}
  for start in range(0, n, chunk_size):
    rows = np.arange(start, start + chunk_size) % n  # wrap: the last chunk keeps the shape
    out = score_tokens(config, params, put(tokens[rows]), put(attention_mask[rows]),
                       tuple(heads), mesh)
    take = min(chunk_size, n - start)
    for k, v in distributed.to_host(out).items():  # every process, multi-host
      parts.setdefault(k, []).append(np.asarray(v)[:take])
  return {k: np.concatenate(v) for k, v in parts.items()}


def logprob_drift(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """Mean and max |a - b| over the masked tokens: the sampler's log-probs vs a training forward."""
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))[np.asarray(mask, bool)]
  if diff.size == 0:
    return {"logprob_drift_mean": 0.0, "logprob_drift_max": 0.0}
  return {"logprob_drift_mean": float(diff.mean()), "logprob_drift_max": float(diff.max())}


# ------------------------------------------------------------------------------------------------
# Data positions for resumable drivers: pure functions of (seed, iteration, step).


def iteration_indices(num_items: int, iteration: int, count: int, seed: int) -> np.ndarray:
  """int[count]: the items (e.g. training questions) of `iteration`, walking through a fresh
  permutation of range(num_items) per pass (seeded by (seed, pass)), `count` per iteration."""
  if num_items < 1 or count < 1:
    raise ValueError(f"iteration_indices needs num_items >= 1 and count >= 1, got {num_items}, "
                     f"{count}")
  positions = np.arange(iteration * count, (iteration + 1) * count)
  passes, offsets = np.divmod(positions, num_items)
  perms = {int(p): np.random.default_rng([seed, int(p)]).permutation(num_items)
           for p in np.unique(passes)}
  return np.asarray([perms[int(p)][o] for p, o in zip(passes, offsets)], np.int64)


def minibatch_rows(num_rows: int, minibatch_size: int, step: int, seed) -> np.ndarray:
  """int[minibatch_size]: rows of minibatch `step` over epochs of a seeded permutation.

  Epoch e = step // ceil(num_rows / minibatch_size) permutes the rows with seed (*seed, e); a last
  short minibatch is filled from the start of the permutation (fixed shapes, one compile).
  """
  per_epoch = -(-num_rows // minibatch_size)
  epoch, index = divmod(step, per_epoch)
  seed = list(seed) if isinstance(seed, (list, tuple)) else [seed]
  perm = np.resize(np.random.default_rng(seed + [epoch]).permutation(num_rows),
                   per_epoch * minibatch_size)
  return perm[index * minibatch_size:(index + 1) * minibatch_size]


# ------------------------------------------------------------------------------------------------
# Plumbing shared by the resumable iteration drivers.


def eval_callback(evaluate_fn):
  """A driver's `on_iteration` from a stage's `evaluate_fn(policy) -> metrics`: the metrics
  named eval_<metric>. None without an evaluate_fn."""
  if evaluate_fn is None:
    return None
  return lambda i, policy: {f"eval_{k}": v for k, v in evaluate_fn(policy).items()}


def end_iteration(i: int, record: dict, tree, meta: dict, *, current, on_iteration, logger,
                  ckpt, prefix: str) -> dict:
  """Closes iteration i (0-based): adds on_iteration(i + 1, current)'s metrics to `record`, logs
  its numbers under `prefix`, appends it to the history and checkpoints `tree` with the new meta
  (so a run killed after this resumes at iteration i + 1). Returns the new meta."""
  if on_iteration is not None:
    record.update(on_iteration(i + 1, current))
  logger.log(i + 1, {k: v for k, v in record.items() if isinstance(v, (int, float))}, prefix)
  meta = {"iteration": i + 1, "history": meta["history"] + [record]}
  ckpt.save(i + 1, tree, meta)
  return meta
