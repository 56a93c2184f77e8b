"""`Rollouts`: what `rlthink.sample` returns, laid out for training without reshuffling.

Rows: row `i * num_samples + j` is sample j of prompt i (`prompt_index[row] == i`). Columns: each
prompt is left-padded to P columns so every prompt ends in column P - 1, and its completion starts
in column P of `tokens`:

    tokens          [N, P + C] = prompt_tokens | completion_tokens
    mask            [N, P + C] = prompt_mask   | completion_mask

so `forward(tokens, attention_mask=mask)` scores the rollouts exactly as they were sampled (RoPE
positions count valid tokens, so the left padding does not shift them), and the log-prob of
completion token j comes from the logits at column P - 1 + j.

The token frame (`Rollouts.train_arrays`): every per-token array of the RL math has P + C - 1
columns, the frame of `ops.next_token_logprobs`: column t is about token t + 1, predicted from
position t, so completion token j sits in column P - 1 + j.

`ScoredRollouts` adds what a task made of the rollouts: the examples, decoded texts and verifier
rewards (`rlthink.rollout.rollout_examples` builds it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["prompt_tokens", "prompt_mask", "completion_tokens",
                                "completion_mask", "logprobs", "sampling_logprobs", "lengths",
                                "stopped", "prompt_index", "decode_steps"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Rollouts:
  """Sampled completions with their log-probs (numpy arrays; a pytree, so jax.tree works on it).

  Attributes:
    prompt_tokens: int32[N, P] prompts, left-padded with the pad id.
    prompt_mask: bool[N, P], True on prompt tokens.
    completion_tokens: int32[N, C] sampled tokens; the stop token (when one ended the row) is the
      last valid one; pad id after it.
    completion_mask: bool[N, C], True on the `lengths[row]` sampled tokens (stop token included).
    logprobs: float32[N, C] log-prob of each sampled token under the policy at temperature 1
      (log_softmax of the raw logits); 0 where the mask is False.
    sampling_logprobs: float32[N, C] log-prob under the distribution actually sampled from
      (temperature / top-k / top-p applied); 0 for greedy decoding (a point mass) and where the
      mask is False.
    lengths: int32[N] number of completion tokens.
    stopped: bool[N], True when a stop token ended the row, False when max_new_tokens did.
    prompt_index: int32[N] index of each row's prompt in the input list.
    decode_steps: int32[] steps the decode loop ran: max(lengths), fewer than max_new_tokens when
      every row sampled a stop token early.
  """

  prompt_tokens: np.ndarray
  prompt_mask: np.ndarray
  completion_tokens: np.ndarray
  completion_mask: np.ndarray
  logprobs: np.ndarray
  sampling_logprobs: np.ndarray
  lengths: np.ndarray
  stopped: np.ndarray
  prompt_index: np.ndarray
  decode_steps: np.ndarray

  @property
  def tokens(self) -> np.ndarray:
    """int32[N, P + C] prompt and completion, aligned (the completion starts in column P)."""
    return np.concatenate([self.prompt_tokens, self.completion_tokens], axis=1)

  @property
  def mask(self) -> np.ndarray:
    """bool[N, P + C] the attention mask of `tokens` (prompt and completion tokens)."""
    return np.concatenate([self.prompt_mask, self.completion_mask], axis=1)

  @property
  def finish_reason(self) -> list[str]:
    """Per row: "stop" (a stop token was sampled) or "length" (max_new_tokens reached)."""
    return ["stop" if s else "length" for s in np.asarray(self.stopped)]

  @property
  def prompt_lengths(self) -> np.ndarray:
    """int32[N] number of prompt tokens of each row."""
    return np.sum(self.prompt_mask, axis=1).astype(np.int32)

  @property
  def num_rows(self) -> int:
    return int(self.lengths.shape[0])

  def completion(self, row: int) -> list[int]:
    """The sampled token ids of one row (stop token included)."""
    return [int(t) for t in self.completion_tokens[row, : int(self.lengths[row])]]

  def prompt(self, row: int) -> list[int]:
    """The prompt token ids of one row, without padding."""
    return [int(t) for t in self.prompt_tokens[row][self.prompt_mask[row]]]

  def train_arrays(self) -> dict[str, np.ndarray]:
    """The training arrays in the token frame (numpy): tokens int32[N, T] (T = P + C),
    attention_mask bool[N, T], completion_mask bool[N, T-1] (True where column t predicts a
    sampled completion token) and old_logprobs float32[N, T-1] (the sampler's log-probs at
    temperature 1, 0 elsewhere)."""
    n, p = self.prompt_tokens.shape
    lead = lambda dtype: np.zeros((n, p - 1), dtype)
    return {"tokens": np.asarray(self.tokens, np.int32),
            "attention_mask": np.asarray(self.mask, bool),
            "completion_mask": np.concatenate([lead(bool), np.asarray(self.completion_mask,
                                                                     bool)], axis=1),
            "old_logprobs": np.concatenate([lead(np.float32), np.asarray(self.logprobs,
                                                                         np.float32)], axis=1)}


def concat_rollouts(parts: Sequence[Rollouts]) -> Rollouts:
  """Row-wise concatenation of chunks: prompts stay right-aligned, completions left-aligned, and
  `prompt_index` counts on across chunks."""
  if len(parts) == 1:
    return parts[0]
  p = max(r.prompt_tokens.shape[1] for r in parts)
  c = max(r.completion_tokens.shape[1] for r in parts)
  fields = {}
  for field in dataclasses.fields(Rollouts):
    values = [getattr(r, field.name) for r in parts]
    if field.name.startswith("prompt_") and values[0].ndim == 2:
      fields[field.name] = np.concatenate([np.pad(v, ((0, 0), (p - v.shape[1], 0)))
                                           for v in values])
    elif values[0].ndim == 2:
      fields[field.name] = np.concatenate([np.pad(v, ((0, 0), (0, c - v.shape[1])))
                                           for v in values])
    elif values[0].ndim == 1:
      fields[field.name] = np.concatenate(values)
    else:  # per-call scalars (e.g. decode_steps): the largest
      fields[field.name] = np.max(values)
  offsets = np.cumsum([0] + [int(r.prompt_index.max()) + 1 for r in parts[:-1]])
  fields["prompt_index"] = np.concatenate([r.prompt_index + o for r, o in zip(parts, offsets)])
  return Rollouts(**fields)


@dataclasses.dataclass
class ScoredRollouts:
  """Completions of `examples` (row i * num_samples + j is sample j of example i).

  texts: decoded completions; rewards: float32[N] verifier scores in [0, 1];
  rollouts: the token-level `Rollouts`.
  """

  examples: list[dict]
  num_samples: int
  texts: list[str]
  rewards: np.ndarray
  rollouts: Rollouts

  def example_of(self, row: int) -> dict:
    """The example that row `row` is a sample of."""
    return self.examples[row // self.num_samples]

  def per_example(self, values: Sequence[Any]) -> list[list[Any]]:
    """`values` (one per row) grouped by example: [[sample 0, ..., sample K-1], ...]."""
    n = self.num_samples
    return [list(values[i * n:(i + 1) * n]) for i in range(len(self.examples))]
