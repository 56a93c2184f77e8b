"""Scoring rollouts with a training forward: log-probs, entropy and values in the token frame
(see `rl_math`), in row chunks for whole rollout batches, and the drift from the sampler's
log-probs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlthink import distributed, ops, sharding
from rlthink.models import decoder
from rlthink.sampling import engine


def frozen_reference(params, config):
  """A frozen copy of `params` for the reference policy: weights in the compute dtype (norm
  scales unchanged), which is what the forward reads anyway, so the reference's log-probs are
  the same while it takes half the memory of float32 master weights (2 of 4 bytes per
  parameter: 15 GB, not 30, for a 7B policy). A new buffer, never donated with the train state.
  """
  return engine.params_for_sampling(params, config, unroll=False)


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


def logprob_drift_metrics(logprobs: jax.Array, sampler_logprobs: jax.Array,
                          mask: jax.Array) -> dict[str, jax.Array]:
  """`logprob_drift` inside a jitted loss: mean and max |logprobs - sampler_logprobs| over the
  masked tokens (float32[B, T-1] each; no gradient), for a loss that runs the forward itself."""
  mask = mask.astype(bool)
  diff = jnp.where(mask, jnp.abs(jax.lax.stop_gradient(logprobs).astype(jnp.float32)
                                 - sampler_logprobs.astype(jnp.float32)), 0.0)
  return {"logprob_drift_mean": ops.masked_mean(diff, mask),
          "logprob_drift_max": jnp.max(diff, initial=0.0)}


def logprob_drift(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """Mean and max |a - b| over the masked tokens: the sampler's log-probs vs a training forward."""
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))[np.asarray(mask, bool)]
  if diff.size == 0:
    return {"logprob_drift_mean": 0.0, "logprob_drift_max": 0.0}
  return {"logprob_drift_mean": float(diff.mean()), "logprob_drift_max": float(diff.max())}
