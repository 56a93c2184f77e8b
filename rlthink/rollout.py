"""Sampling and scoring completions of a task's examples: what evaluation and every RL driver share.

`rollout_examples` turns examples into prompts (the task's prompt format and tokenizer), samples
`num_samples` completions per prompt in chunks of `batch_size` prompts, decodes them and scores
each with the task's verifier. The chunks are dispatched ahead (`rlthink.sampling.sample_async`):
the device samples chunk k + 1 while the host decodes and verifies chunk k. The result is a
`rlthink.sampling.rollouts.ScoredRollouts`, the one home of the rollout types.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlthink.sampling import sample_async
from rlthink.sampling.rollouts import ScoredRollouts, concat_rollouts
from rlthink.sampling.text import decode_completions
from rlthink.tasks.base import Task
from rlthink.tasks.pipeline import encode_prompt


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
  starts = range(0, len(prompts), batch_size)
  launch = lambda chunk: sample_async(
      policy, prompts[starts[chunk]:starts[chunk] + batch_size], max_new_tokens=max_new_tokens,
      temperature=temperature, top_k=top_k, top_p=top_p, num_samples=num_samples,
      seed=seed + chunk)
  pending = launch(0) if starts else None
  parts, texts, rewards = [], [], []
  for chunk, start in enumerate(starts):
    rollouts = pending.result()
    # Dispatched once chunk k is back (one chunk's sampling buffers on the device at a time),
    # chunk k + 1 samples while the host decodes and verifies chunk k.
    pending = launch(chunk + 1) if chunk + 1 < len(starts) else None
    chunk_texts = decode_completions(tokenizer, rollouts)
    rewards += [task.verify(text, examples[start + i // num_samples])
                for i, text in enumerate(chunk_texts)]
    parts.append(rollouts)
    texts += chunk_texts
  return ScoredRollouts(examples, num_samples, texts, np.asarray(rewards, np.float32),
                        concat_rollouts(parts))
