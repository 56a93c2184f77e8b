"""Text in, text out: prompts through the policy's tokenizer, completions back to strings.

`sample_text` is what `rlthink sample` runs: strings in, one record per completion out (ready to
print as JSON lines). Stop strings are applied after decoding: the decode loop runs until a stop
token or max_new_tokens, then each completion is cut after the first token whose text completes a
stop string, and its mask, log-probs, length and finish reason are cut with it (the stop string is
kept at the end of the text, as a stop token is kept at the end of the tokens).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from rlthink.sampling.config import SampleConfig
from rlthink.sampling.rollouts import Rollouts
from rlthink.sampling.sampler import sample


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
  """Token ids of each prompt (the tokenizer's own special tokens, e.g. a BOS, included)."""
  out = []
  for i, p in enumerate(prompts):
    if not isinstance(p, str):
      raise TypeError(f"prompt {i} is a {type(p).__name__}; give all prompts as strings or all "
                      "as token-id lists")
    out.append(list(tokenizer(p)["input_ids"]))
  return out


def decode_completions(tokenizer, rollouts: Rollouts) -> list[str]:
  """The text of every row's completion (special tokens such as eos skipped)."""
  return [tokenizer.decode(rollouts.completion(r), skip_special_tokens=True)
          for r in range(rollouts.num_rows)]


def _first_stop(tokenizer, tokens: list[int], stop_strings: Sequence[str]) -> int | None:
  """Smallest prefix length whose text contains a stop string, or None."""
  decode = lambda n: tokenizer.decode(tokens[:n], skip_special_tokens=True)
  if not any(s in decode(len(tokens)) for s in stop_strings):
    return None
  lo, hi = 1, len(tokens)  # the answer is in [lo, hi]: binary search on the prefix length
  while lo < hi:
    mid = (lo + hi) // 2
    if any(s in decode(mid) for s in stop_strings):
      hi = mid
    else:
      lo = mid + 1
  return lo


def apply_stop_strings(tokenizer, rollouts: Rollouts, stop_strings: Sequence[str],
                       pad_id: int = 0) -> Rollouts:
  """Cuts each completion after the token that completes its first stop string (see module doc);
  the cut-off tokens become `pad_id` with mask False and log-probs 0."""
  stop_strings = [s for s in stop_strings if s]
  if not stop_strings:
    return rollouts
  lengths = rollouts.lengths.copy()
  stopped = rollouts.stopped.copy()
  for r in range(rollouts.num_rows):
    cut = _first_stop(tokenizer, rollouts.completion(r), stop_strings)
    if cut is not None:  # cut <= lengths[r]: only the valid tokens were decoded
      lengths[r], stopped[r] = cut, True
  keep = np.arange(rollouts.completion_tokens.shape[1])[None, :] < lengths[:, None]
  return dataclasses.replace(
      rollouts, completion_tokens=np.where(keep, rollouts.completion_tokens, pad_id),
      completion_mask=keep, logprobs=np.where(keep, rollouts.logprobs, 0.0).astype(np.float32),
      sampling_logprobs=np.where(keep, rollouts.sampling_logprobs, 0.0).astype(np.float32),
      lengths=lengths, stopped=stopped)


def _cut_text(text: str, stop_strings: Sequence[str]) -> str:
  ends = [text.find(s) + len(s) for s in stop_strings if s and s in text]
  return text[:min(ends)] if ends else text


def sample_text(policy, prompts: Sequence[str], config: Any = None,
                **overrides) -> list[dict]:
  """Samples completions of string prompts; returns one JSON-ready record per completion.

  Args:
    policy: a `Policy` with a tokenizer attached.
    prompts: the prompt strings.
    config: a `SampleConfig` (default: `SampleConfig()`; the gin-bound one is
      `gin_utils.configured(SampleConfig)`).
    overrides: `SampleConfig` fields to replace, e.g. `max_new_tokens=32`.

  Returns:
    [{"prompt_index", "sample_index", "prompt", "completion", "finish_reason", "num_tokens",
      "logprob"}] in row order (sample j of prompt i at i * num_samples + j); "logprob" is the
    completion's total log-prob under the policy at temperature 1.
  """
  if policy.tokenizer is None:
    raise ValueError("sample_text needs a policy with a tokenizer (policy.replace(tokenizer=...))")
  if isinstance(prompts, str):
    prompts = [prompts]
  config = dataclasses.replace(config or SampleConfig(), **overrides)
  ids = encode_prompts(policy.tokenizer, prompts)
  rollouts = sample(policy, ids, **config.sample_kwargs())
  pad_id = policy.config.pad_token_id if policy.config.pad_token_id is not None else 0
  rollouts = apply_stop_strings(policy.tokenizer, rollouts, config.stop_strings, pad_id)
  texts = [_cut_text(t, config.stop_strings)
           for t in decode_completions(policy.tokenizer, rollouts)]
  n = config.num_samples
  return [{"prompt_index": int(rollouts.prompt_index[r]), "sample_index": r % n,
           "prompt": prompts[int(rollouts.prompt_index[r])], "completion": texts[r],
           "finish_reason": rollouts.finish_reason[r], "num_tokens": int(rollouts.lengths[r]),
           "logprob": float(rollouts.logprobs[r].sum())}
          for r in range(rollouts.num_rows)]
