"""Small array functions shared by sampling, training and every algorithm. Each exists only here."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rlthink.models.decoder import project_logits


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


# ----------------------------------------------------------------------------------------------
# Log-probs straight from the last hidden states: the vocab projection, log-softmax and gather in
# chunks of positions, so the float32 logits [B, T, V] never exist whole (5 GB at 8x1024 tokens
# and a 152k vocab) and the backward runs bf16 matmuls.


# With save_probs=None the fused log-probs keep the softmax when it takes at most this (bytes).
SAVE_PROBS_MAX_BYTES = 4 << 30


def default_save_probs(batch: int, length: int, vocab: int, dtype) -> bool:
  """Whether the fused log-probs keep the softmax [batch, length, vocab] of `dtype` for the
  backward by default: when it takes at most `SAVE_PROBS_MAX_BYTES`."""
  return batch * length * vocab * jnp.dtype(dtype).itemsize <= SAVE_PROBS_MAX_BYTES


def fused_token_logprobs(hidden: jax.Array, unembedding: jax.Array, tokens: jax.Array,
                         chunk_size: int = 256, save_probs: bool | None = None) -> jax.Array:
  """log softmax(hidden @ unembedding.T)[tokens], computed `chunk_size` positions at a time.

  The same function as `token_logprobs(einsum("bte,ve->btv", hidden, unembedding), tokens)` with
  float32 logits, but memory holds one chunk of logits [B, chunk_size, V] at a time.

  Args:
    hidden: [B, T, E] in the compute dtype (the decoder's "hidden" head).
    unembedding: [V, E], the output embedding (`decoder.unembedding`), any float dtype; it is cast
      to hidden's dtype for the matmuls and its gradient comes back in its own dtype, summed over
      the chunks in float32.
    tokens: int[B, T] the ids whose log-probs are wanted.
    chunk_size: positions per chunk (T is padded up to a multiple of it).
    save_probs: keep the softmax [B, T, V] in hidden's dtype for the backward instead of
      recomputing the chunk's logits there: one matmul less per chunk, for B*T*V*2 bytes of memory.
      None: `default_save_probs` (keep it when it takes at most `SAVE_PROBS_MAX_BYTES`).

  Returns:
    float32[B, T]. Differentiable in hidden and unembedding: the backward runs each chunk's two
    matmuls on the softmax in hidden's dtype with float32 accumulation (the one-hot part of
    d(logits) becomes a gather and a scatter-add), never forming d(logits) itself.
  """
  b, t, _ = hidden.shape
  hidden, tokens, chunk = _chunked_inputs("fused_token_logprobs", hidden, unembedding, tokens,
                                          chunk_size)
  if save_probs is None:
    save_probs = default_save_probs(b, t, unembedding.shape[0], hidden.dtype)
  logp = _fused_logprobs(hidden, unembedding, tokens.astype(jnp.int32), chunk, bool(save_probs))
  return logp[:, :t]


def fused_next_token_logprobs(hidden: jax.Array, unembedding: jax.Array, tokens: jax.Array,
                              chunk_size: int = 256, save_probs: bool | None = None) -> jax.Array:
  """`next_token_logprobs` from hidden states [B, T, E]: log-prob of tokens[:, t+1] at position t,
  float32[B, T-1], via `fused_token_logprobs` (all T positions run, the last is dropped, so T
  keeps its divisibility by the chunk size)."""
  targets = jnp.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)
  return fused_token_logprobs(hidden, unembedding, targets, chunk_size, save_probs)[:, :-1]


def _chunked_inputs(name: str, hidden: jax.Array, unembedding: jax.Array, tokens: jax.Array,
                    chunk_size: int):
  """Checks the shapes; pads hidden [B, T, E] and tokens [B, T] to a multiple of the chunk (padded
  positions see zero hidden states: finite values, for the caller to slice off). Returns
  (hidden, tokens, chunk)."""
  b, t, _ = hidden.shape
  if tokens.shape != (b, t):
    raise ValueError(f"{name}: tokens {tokens.shape} must be hidden's [B, T] = {(b, t)}")
  if unembedding.shape[1] != hidden.shape[2]:
    raise ValueError(f"{name}: unembedding {unembedding.shape} must be [V, E] with E = hidden's "
                     f"last axis {hidden.shape[2]}")
  chunk = max(1, min(int(chunk_size), t))
  pad = -t % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    tokens = jnp.pad(tokens, ((0, 0), (0, pad)))
  return hidden, tokens, chunk


def _to_chunks(x: jax.Array, chunk: int) -> jax.Array:
  """[B, T, ...] -> [T / chunk, B, chunk, ...]: the scanned axis first, the batch axis kept whole
  (so a batch sharded over devices stays sharded)."""
  b, t = x.shape[:2]
  return jnp.moveaxis(x.reshape((b, t // chunk, chunk) + x.shape[2:]), 1, 0)


def _from_chunks(x: jax.Array) -> jax.Array:
  """[N, B, chunk, ...] -> [B, N * chunk, ...]."""
  n, b, c = x.shape[:3]
  return jnp.moveaxis(x, 0, 1).reshape((b, n * c) + x.shape[3:])


def _chunk_logits(h: jax.Array, w: jax.Array) -> jax.Array:
  """h [B, C, E] @ w [V, E].T -> float32 logits [B, C, V] (inputs in the compute dtype)."""
  return jnp.einsum("bce,ve->bcv", h, w, preferred_element_type=jnp.float32)


def _fused_forward(hidden, unembedding, tokens, chunk, save_probs):
  w = unembedding.astype(hidden.dtype)

  def body(_, xs):
    h, tok = xs
    logits = _chunk_logits(h, w)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, tok[..., None], axis=-1)[..., 0]
    probs = jnp.exp(logits - lse[..., None]).astype(hidden.dtype) if save_probs else None
    return None, (picked - lse, lse, probs)

  _, (logp, lse, probs) = jax.lax.scan(body, None, (_to_chunks(hidden, chunk),
                                                    _to_chunks(tokens, chunk)))
  return _from_chunks(logp), lse, probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused_logprobs(hidden, unembedding, tokens, chunk, save_probs):
  return _fused_forward(hidden, unembedding, tokens, chunk, save_probs=False)[0]


def _fused_logprobs_fwd(hidden, unembedding, tokens, chunk, save_probs):
  logp, lse, probs = _fused_forward(hidden, unembedding, tokens, chunk, save_probs)
  return logp, (hidden, unembedding, tokens, lse, probs)


def _fused_logprobs_bwd(chunk, save_probs, residuals, g):
  # With p = softmax(logits) and d(logits) = g * (onehot - p), the two gradients are
  #   d(hidden) = g * (W[tokens] - p @ W),  dW = scatter_add(tokens, g * hidden) - p.T @ (g*hidden),
  # so each chunk's matmuls read p itself (compute dtype) and d(logits) is never written.
  hidden, unembedding, tokens, lse, probs = residuals
  dt = hidden.dtype
  w = unembedding.astype(dt)
  g = g.astype(jnp.float32)
  gh = g[..., None] * hidden.astype(jnp.float32)  # [B, T, E]
  dw_onehot = jnp.zeros(w.shape, jnp.float32).at[tokens.reshape(-1)].add(
      gh.reshape(-1, gh.shape[-1]))

  def body(dw, xs):
    h, lse_c, gh_c, g_c, p_c = xs
    if p_c is None:
      p_c = jnp.exp(_chunk_logits(h, w) - lse_c[..., None]).astype(dt)
    p_w = jnp.einsum("bcv,ve->bce", p_c, w, preferred_element_type=jnp.float32)
    dw = dw - jnp.einsum("bcv,bce->ve", p_c, gh_c.astype(dt), preferred_element_type=jnp.float32)
    return dw, -g_c[..., None] * p_w

  xs = (_to_chunks(hidden, chunk), lse, _to_chunks(gh, chunk), _to_chunks(g, chunk), probs)
  dw, dh_p = jax.lax.scan(body, dw_onehot, xs)
  dh = _from_chunks(dh_p) + g[..., None] * jnp.take(w, tokens, axis=0).astype(jnp.float32)
  return dh.astype(dt), dw.astype(unembedding.dtype), None


_fused_logprobs.defvjp(_fused_logprobs_fwd, _fused_logprobs_bwd)


# ----------------------------------------------------------------------------------------------
# Log-probs and entropy from the hidden states, for the RL losses: the same chunking, with each
# chunk's float32 logits recomputed in the backward (jax.checkpoint) instead of a hand-written
# VJP, so the entropy (which needs the whole distribution) comes with it.


def chunked_token_logprobs(hidden: jax.Array, unembedding: jax.Array, tokens: jax.Array,
                           chunk_size: int = 128, with_entropy: bool = True):
  """(log softmax(logits)[tokens], entropy of softmax(logits)), logits = hidden @ unembedding.T.

  Equal to `token_logprobs` and `entropy` of the float32 logits, but memory holds the logits of
  one chunk of `chunk_size` positions [B, chunk_size, V] at a time, in the forward and in the
  backward (which recomputes them). The PPO/GRPO/START/RCRL losses use it: their full logits
  (and the log-softmax, the softmax and their gradients, all [B, T, V] float32) took tens of GB
  at a 152k vocabulary.

  Args:
    hidden: [B, T, E] in the compute dtype (the decoder's "hidden" head).
    unembedding: [V, E] (`decoder.unembedding`); cast to hidden's dtype inside each chunk, so its
      gradient is summed over the chunks in its own dtype.
    tokens: int[B, T].
    with_entropy: also return the entropy (else None).

  Returns:
    (float32[B, T], float32[B, T] or None). Differentiable in hidden and unembedding; the logits'
    backward matmuls run in hidden's dtype (`decoder.project_logits`).
  """
  t = hidden.shape[1]
  hidden, tokens, chunk = _chunked_inputs("chunked_token_logprobs", hidden, unembedding, tokens,
                                          chunk_size)

  @jax.checkpoint
  def body(_, xs):
    h, tok = xs
    logp = jax.nn.log_softmax(project_logits(h, unembedding.astype(h.dtype).T), axis=-1)
    picked = jnp.take_along_axis(logp, tok[..., None], axis=-1)[..., 0]
    if not with_entropy:
      return None, (picked,)
    return None, (picked, -jnp.sum(jnp.exp(logp) * logp, axis=-1))

  _, outs = jax.lax.scan(body, None, (_to_chunks(hidden, chunk),
                                      _to_chunks(tokens.astype(jnp.int32), chunk)))
  outs = [_from_chunks(x)[:, :t] for x in outs]
  return outs[0], (outs[1] if with_entropy else None)


def chunked_next_token_logprobs(hidden: jax.Array, unembedding: jax.Array, tokens: jax.Array,
                                chunk_size: int = 128, with_entropy: bool = True):
  """`chunked_token_logprobs` in the token frame: the log-prob of tokens[:, t+1] and the entropy
  at position t, float32[B, T-1] each (all T positions run, the last is dropped)."""
  targets = jnp.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)
  logp, ent = chunked_token_logprobs(hidden, unembedding, targets, chunk_size, with_entropy)
  return logp[:, :-1], (None if ent is None else ent[:, :-1])
