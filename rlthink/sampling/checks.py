"""Everything a user can get wrong in a `sample` call, checked in numpy before anything compiles.

Each error names the argument (and the prompt or request index) and what was expected.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def default_stop_tokens(policy) -> tuple[int, ...]:
  """The model's (and the tokenizer's) eos ids."""
  ids = set(policy.config.eos_token_id)
  if policy.tokenizer is not None:
    ids.add(getattr(policy.tokenizer, "eos_token_id", None))
  return tuple(sorted(i for i in ids if i is not None))


def check_prompts(prompts, vocab_size: int, tokenizer) -> list[np.ndarray]:
  """The prompts as int32 arrays (strings encoded with the tokenizer), each non-empty and within
  the vocabulary."""
  if hasattr(prompts, "__array__") and not isinstance(prompts, np.ndarray):  # e.g. a jax.Array
    prompts = np.asarray(prompts)
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)):
    raise TypeError(f"prompts must be a list of token-id lists (or of strings with a tokenizer), "
                    f"got {type(prompts).__name__}")
  if len(prompts) == 0:
    raise ValueError("prompts is empty: give at least one prompt")
  if any(isinstance(p, str) for p in prompts):
    if tokenizer is None:
      raise ValueError("string prompts need a tokenizer: attach one to the policy "
                       "(policy.replace(tokenizer=...)) or pass token ids")
    from rlthink.sampling import text  # cycle: text imports the sampler, which imports this
    prompts = text.encode_prompts(tokenizer, prompts)
  out = []
  for i, p in enumerate(prompts):
    a = np.asarray(p)
    if a.ndim != 1:
      raise ValueError(f"prompt {i} must be a 1-D sequence of token ids, got shape {a.shape}")
    if a.size == 0:
      raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
    if not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"prompt {i} must hold integer token ids, got dtype {a.dtype}")
    if a.min() < 0 or a.max() >= vocab_size:
      bad = int(a[(a < 0) | (a >= vocab_size)][0])
      raise ValueError(f"prompt {i} has token id {bad} outside the vocabulary [0, {vocab_size})")
    out.append(a.astype(np.int32))
  return out


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_values(*, max_new_tokens, temperature, top_p, where: str = "") -> None:
  """Raises ValueError naming the sampling value out of range (`where`: a prefix such as
  "EvalConfig." for values read from a config, so bad values stop before any compute)."""
  if not _is_int(max_new_tokens) or max_new_tokens <= 0:
    raise ValueError(f"{where}max_new_tokens must be a positive int, got {max_new_tokens!r}")
  if not isinstance(temperature, (int, float, np.number)) or not (
      math.isfinite(temperature) and temperature >= 0):
    raise ValueError(f"{where}temperature must be a finite number >= 0 (0 = greedy), got "
                     f"{temperature!r}")
  if top_p is not None and (not isinstance(top_p, (int, float, np.number)) or
                            not 0 < top_p <= 1):
    raise ValueError(f"{where}top_p must be None or a number in (0, 1], got {top_p!r}")


def check_options(config, longest: int, longest_index: int, max_new_tokens, temperature, top_k,
                   top_p, num_samples, seed, stop_tokens) -> None:
  """Raises ValueError naming the option that is out of range, or the longest prompt when it
  does not fit the model's max_seq_len with max_new_tokens."""
  check_values(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
  if not _is_int(num_samples) or num_samples <= 0:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
  if not _is_int(seed) or not 0 <= seed < 2 ** 32:
    raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
  if top_k is not None and (not _is_int(top_k) or not 1 <= top_k <= config.vocab_size):
    raise ValueError(f"top_k must be None or an int in [1, {config.vocab_size}], got {top_k!r}")
  for t in stop_tokens:
    if not _is_int(t) or not 0 <= t < config.vocab_size:
      raise ValueError(f"stop token {t!r} is not a token id in [0, {config.vocab_size})")
  if longest + max_new_tokens > config.max_seq_len:
    raise ValueError(
        f"prompt {longest_index} has {longest} tokens: with max_new_tokens={max_new_tokens} the "
        f"rollout needs {longest + max_new_tokens} positions, more than the model's "
        f"max_seq_len={config.max_seq_len} (the KV cache's limit); shorten the prompt or "
        "max_new_tokens")


def slots(max_slots, shards: int) -> int | None:
  """The continuous engine's decode rows: max_slots rounded up to a multiple of `shards` (the
  mesh's batch shards); None stays None (static batching)."""
  if max_slots is None:
    return None
  if isinstance(max_slots, bool) or not isinstance(max_slots, (int, np.integer)) or max_slots < 1:
    raise ValueError(f"max_slots must be None or a positive int, got {max_slots!r}")
  return -(-int(max_slots) // shards) * shards


def request_limits(limits, rows: int, max_new_tokens: int) -> np.ndarray:
  """int32[rows] the most new tokens of each request (row i * num_samples + j)."""
  if limits is None:
    return np.full((rows,), max_new_tokens, np.int32)
  a = np.asarray(limits)
  if a.shape != (rows,) or not np.issubdtype(a.dtype, np.integer):
    raise ValueError(f"max_new_tokens_per_request must hold one int per request (len(prompts) * "
                     f"num_samples = {rows}), got shape {a.shape} and dtype {a.dtype}")
  bad = np.flatnonzero((a < 1) | (a > max_new_tokens))
  if bad.size:
    raise ValueError(f"max_new_tokens_per_request[{bad[0]}] = {a[bad[0]]}: each request's limit "
                     f"must be in [1, max_new_tokens={max_new_tokens}] (the cache holds "
                     "max_new_tokens new tokens per row)")
  return a.astype(np.int32)
