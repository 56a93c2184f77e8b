"""Small array functions shared by sampling, training and every algorithm. Each exists only here."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(logits)[tokens]: logits float[..., V], tokens int[...] -> float32[...]."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def next_token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """Log-prob of tokens[:, t+1] under logits[:, t]: float32[B, T-1]."""
  return token_logprobs(logits[:, :-1], tokens[:, 1:])


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  return jnp.sum(x * mask, axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
  """Mean of x over entries where mask is true (0 where the mask is empty)."""
  mask = mask.astype(jnp.float32)
  return masked_sum(x, mask, axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def entropy(logits: jax.Array) -> jax.Array:
  """Entropy of softmax(logits) over the last axis, float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
