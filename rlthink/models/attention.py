"""Attention math shared by the decoder (`decoder`) and its decode fast path (`decode`).

The named inputs every attention layer reads (`AttentionContext`, `LayerCache`), RoPE (linear and
llama3 scaling, rotate-half convention), the attention mask over slots and XLA's softmax
attention. Slots are cache slots, or the input positions when there is no cache.

Shapes: B batch, T input length, S key slots, H heads, K kv heads, D head_dim, L layers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlthink.models.config import ModelConfig

NEG_INF = -1e30  # finite, so fully masked rows (padding queries) give no NaNs


class AttentionContext(NamedTuple):
  """What every layer's attention reads besides its input; the same for all layers of a call.

  q_slots: int32[B, T] the slot of each query (its position in the cache, or in the input).
  key_valid: bool[B, S] which slots hold a real key; None: all of them (no padding, no cache).
  q_segments, k_segments: int32[B, T] / [B, S] packing segments (keys attend within their
    segment), or None.
  index: int32[] the first slot this call writes (0 without a cache).
  first_valid: int32[B] each row's first valid slot, for the Pallas decode kernel (which reads
    slots first_valid .. index); None elsewhere.
  """

  q_slots: jax.Array
  key_valid: jax.Array | None = None
  q_segments: jax.Array | None = None
  k_segments: jax.Array | None = None
  index: jax.Array | int = 0
  first_valid: jax.Array | None = None


class LayerCache(NamedTuple):
  """One layer's view of the KV cache, carried through the layers.

  Scanned layers: k, v the whole stacked cache [L, B, K, S, D], layer this layer's int32 index.
  Unrolled layers (per-layer params): k, v this layer's own buffers [B, K, S, D], layer None.
  """

  k: jax.Array
  v: jax.Array
  layer: jax.Array | None = None


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
  """Inverse RoPE frequencies [D/2], with linear or llama3 scaling applied (float64 numpy)."""
  d = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
  if config.rope_type == "linear":
    inv_freq = inv_freq / config.rope_factor
  elif config.rope_type == "llama3":
    factor, old_len = config.rope_factor, config.rope_original_max_position
    low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv_freq = np.where(medium, smoothed, scaled)
  return inv_freq


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin of the RoPE angles, float32 [..., D/2] for int positions [...]."""
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """x: [B, T, N, D]; positions: int[B, T]. Rotate-half convention (Llama, Qwen)."""
  cos, sin = rope_tables(positions, inv_freq)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attention_mask(q_slots: jax.Array, key_valid: jax.Array, q_segments: jax.Array | None,
                   k_segments: jax.Array | None, window: int | None) -> jax.Array:
  """bool[B, T, S]: causal over slots, valid keys only, same packing segment, within the window.

  q_slots: int[B, T] slot of each query; key_valid: bool[B, S].
  """
  k_slots = jnp.arange(key_valid.shape[1], dtype=jnp.int32)
  mask = (k_slots[None, None, :] <= q_slots[:, :, None]) & key_valid[:, None, :]
  if q_segments is not None:
    mask &= q_segments[:, :, None] == k_segments[:, None, :]
  if window is not None:
    mask &= q_slots[:, :, None] - k_slots[None, None, :] < window
  return mask


def dot_product_attention(q, k, v, mask, kv_layout: str = "bskd") -> jax.Array:
  """q: [B,T,H,D], k/v: [B,S,K,D] (or [B,K,S,D] with kv_layout="bksd", the KV-cache layout),
  mask: bool[B,T,S] -> [B,T,H,D]. Softmax in float32."""
  b, t, h, d = q.shape
  kv = k.shape[kv_layout.index("k")]
  q = q.reshape(b, t, kv, h // kv, d)
  logits = jnp.einsum(f"btkgd,{kv_layout}->bkgts", q, k, preferred_element_type=jnp.float32)
  logits = logits / np.sqrt(d).astype(np.float32)
  logits = jnp.where(mask[:, None, None, :, :], logits, NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs, v)
  return out.reshape(b, t, h, d)
