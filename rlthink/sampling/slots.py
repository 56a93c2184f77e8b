"""The continuous engine's static layout (`SlotOptions`, `Layout`) and its buffer operations.

`rlthink.sampling.continuous` runs the program; this module holds what it is built from: the
prefill schedule a user sets, the cache columns it implies, and the per-layer KV-buffer updates
(prompt blocks placed into slots, rows copied from the prefill banks), written once for both
cache layouts (per-layer tuples [B, K, S, D] and the stacked [L, B, K, S, D]).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SlotOptions:
  """How the continuous engine schedules its prefills (`rlthink.sample(..., slot_options=)`).

  prefill_prompts: prompts prefilled together inside the loop (one buffer; the pool holds as
    many).
  prefill_chunk: prompt tokens of each of them per decode step (a longer prompt takes several
    steps, each also decoding every slot).
  refills_per_step: the most slots that take a new request in one step (the rest wait a step).
  margin: cache columns beyond the longest request (prompt bucket + max_new_tokens), rounded
    to 16; the rows move left by this much when the write column reaches the end. None: half
    the longest request.
  """

  prefill_prompts: int = 16
  prefill_chunk: int = 256
  refills_per_step: int = 8
  margin: int | None = None

  def __post_init__(self):
    for name in ("prefill_prompts", "prefill_chunk", "refills_per_step"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"SlotOptions.{name}={value!r} must be a positive int")
    if self.margin is not None and (not isinstance(self.margin, int) or self.margin < 1):
      raise ValueError(f"SlotOptions.margin={self.margin!r} must be None or a positive int")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static sizes of one continuous program (from `layout`)."""

  prompt_len: int      # P: prompts left-padded to P columns (all but the last are prefilled)
  prefix_len: int      # the prefill buffer's columns: P - 1 rounded up to a chunk multiple
  chunk: int           # prompt columns per in-loop prefill step
  cache_len: int       # S = prefix_len + max_new_tokens + margin, a multiple of 16
  margin: int


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def layout(prompt_len: int, max_new_tokens: int, options: SlotOptions) -> Layout:
  """The cache layout of prompts of `prompt_len` columns and `max_new_tokens` new tokens."""
  prefix = max(prompt_len - 1, 1)
  chunk = min(options.prefill_chunk, prefix)
  prefix = _round_up(prefix, chunk)
  span = prefix + max_new_tokens
  margin = _round_up(options.margin or max(span // 2, 16), 16)
  return Layout(prompt_len, prefix, chunk, _round_up(span + margin, 16), margin)


def kv_map(fn, *caches):
  """fn(*leaves, batch_axis) over the k and v leaves of caches of one layout (per-layer tuples
  [B, K, S, D] or stacked [L, B, K, S, D]); returns {"k": ..., "v": ...}."""
  out = {}
  for name in ("k", "v"):
    first = caches[0][name]
    if isinstance(first, tuple):
      out[name] = tuple(fn(*xs, 0) for xs in zip(*(c[name] for c in caches)))
    else:
      out[name] = fn(*(c[name] for c in caches), 1)
  return out


def place(big, small, batch_axis: int, start):
  """`small` (its batch rows, all columns) written into `big` at (row 0, column `start`)."""
  index = [0] * big.ndim
  index[batch_axis + 2] = start
  return jax.lax.dynamic_update_slice(big, small.astype(big.dtype), tuple(index))


def copy_rows(big, pool, batch_axis: int, rows, entries, start, width: int):
  """big[rows[f], :, start + j] = pool[entries[f], :, j] for j < width (rows out of range are
  dropped): the prefilled prompts of `entries` into the cache rows `rows`."""
  cols = start + jnp.arange(width)
  if batch_axis == 0:                                              # [B, K, S, D]
    update = jnp.transpose(pool[entries], (0, 2, 1, 3))             # [F, W, K, D]
    return big.at[rows[:, None], :, cols[None, :], :].set(update.astype(big.dtype), mode="drop")
  update = jnp.transpose(pool[:, entries], (1, 3, 0, 2, 4))         # [F, W, L, K, D]
  return big.at[:, rows[:, None], :, cols[None, :], :].set(update.astype(big.dtype), mode="drop")


def cond_update(pred, fn, state: dict, reads: tuple, writes: tuple) -> dict:
  """`state` with the fields `writes` replaced by fn(sub-state) where pred holds. Only the
  fields fn reads or writes go through the conditional: a field passed through it unchanged
  would cost a copy of it every step (its buffer could not be shared with a later in-place
  update)."""
  sub = {k: state[k] for k in reads + writes}
  out = jax.lax.cond(pred, fn, lambda sub: {k: sub[k] for k in writes}, sub)
  return dict(state, **out)
