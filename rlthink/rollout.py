"""Sampling and scoring completions of a task's examples: what evaluation and every RL driver share.

`rollout_examples` turns examples into prompts (the task's prompt format and tokenizer), samples
`num_samples` completions per prompt with `rlthink.sample` in chunks of `batch_size` prompts,
decodes them and scores each with the task's verifier.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from rlthink.sampling import sample
from rlthink.sampling.rollouts import Rollouts
from rlthink.sampling.text import decode_completions
from rlthink.tasks.base import Task
from rlthink.tasks.pipeline import encode_prompt


@dataclasses.dataclass
class ScoredRollouts:
  """Completions of `examples` (row i * num_samples + j is sample j of example i).

  texts: decoded completions; rewards: float32[N] verifier scores in [0, 1];
  rollouts: the token-level `Rollouts` (one per chunk of prompts, concatenated row-wise).
  """

  examples: list[dict]
  num_samples: int
  texts: list[str]
  rewards: np.ndarray
  rollouts: Rollouts

  def per_example(self, values: Sequence[Any]) -> list[list[Any]]:
    n = self.num_samples
    return [list(values[i * n:(i + 1) * n]) for i in range(len(self.examples))]


def _concat(parts: list[Rollouts]) -> Rollouts:
  """Row-wise concatenation of chunks: prompts stay right-aligned, completions left-aligned."""
  if len(parts) == 1:
    return parts[0]
  p = max(r.prompt_tokens.shape[1] for r in parts)
  c = max(r.completion_tokens.shape[1] for r in parts)
  fields = {}
  for field in dataclasses.fields(Rollouts):
    values = [getattr(r, field.name) for r in parts]
    if field.name.startswith("prompt_") and values[0].ndim == 2:
      fields[field.name] = np.concatenate([np.pad(v, ((0, 0), (p - v.shape[1], 0))) for v in values])
    elif values[0].ndim == 2:
      fields[field.name] = np.concatenate([np.pad(v, ((0, 0), (0, c - v.shape[1]))) for v in values])
    elif values[0].ndim == 1:
      fields[field.name] = np.concatenate(values)
    else:  # per-call scalars (e.g. decode_steps): the largest
      fields[field.name] = np.max(values)
  offsets = np.cumsum([0] + [int(r.prompt_index.max()) + 1 for r in parts[:-1]])
  fields["prompt_index"] = np.concatenate([r.prompt_index + o for r, o in zip(parts, offsets)])
  return Rollouts(**fields)


def rollout_examples(policy, task: Task, examples: Sequence[dict], *, num_samples: int,
                     max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, seed: int = 0, batch_size: int = 64,
                     prompt_prefix: str = "") -> ScoredRollouts:
  """Samples and scores `num_samples` completions for each example.

  prompt_prefix: text put before each prompt (return-conditioned RL's "<correct>" token, say).
  Each chunk of `batch_size` prompts uses seed + chunk index, so results do not depend on how
  many chunks came before on a resumed run.
  """
  if policy.tokenizer is None:
    raise ValueError("rollout_examples needs a policy with a tokenizer attached")
  tokenizer = policy.tokenizer
  examples = list(examples)
  prompts = []
  for ex in examples:
    ids = encode_prompt(task, ex, tokenizer)
    if prompt_prefix:
      prefix = tokenizer.encode(prompt_prefix, add_special_tokens=False)
      ids = np.concatenate([ids[:1], prefix, ids[1:]]) if (
          tokenizer.bos_token_id is not None and len(ids) and ids[0] == tokenizer.bos_token_id
      ) else np.concatenate([prefix, ids])
    prompts.append([int(t) for t in ids])
  parts = []
  for chunk, start in enumerate(range(0, len(prompts), batch_size)):
    parts.append(sample(policy, prompts[start:start + batch_size], max_new_tokens=max_new_tokens,
                        temperature=temperature, top_k=top_k, top_p=top_p,
                        num_samples=num_samples, seed=seed + chunk))
  rollouts = _concat(parts)
  texts = decode_completions(tokenizer, rollouts)
  rewards = np.asarray([task.verify(text, examples[i // num_samples])
                        for i, text in enumerate(texts)], np.float32)
  return ScoredRollouts(examples, num_samples, texts, rewards, rollouts)
