"""Multiple choice scored by likelihood: the option whose answer the model finds most likely.

The predecessor of Chaudhry, Thiagarajan and Lampinen (2026) (Lampinen et al., arXiv 2505.00661)
scores forced-choice questions by the likelihood of each option's text rather than by a generated
answer. Here each option's answer as the model would give it (the task's
`option_answers(example)`: its letter when the options are listed in the prompt) follows the
prompt and an empty thinking span, exactly as the reference completion would write it; its score
is the summed log-probability of the answer tokens and <eos> (the shared thinking markers are
left out: they do not change which option wins). The pick is the highest score (the first on
ties); it is right when it is `example["answer_index"]`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlthink.algorithms import scoring
from rlthink.tasks.pipeline import encode_sft


def _bucket(n: int, smallest: int = 64) -> int:
  """A power of two >= n (and >= smallest): sequence lengths padded to few shapes (and rows to
  a whole chunk of batch_size), so the splits and stages of a run share their compiled scoring
  forwards."""
  return max(smallest, 1 << max(n - 1, 0).bit_length())


def option_answers(task, example: dict, split: str = "") -> list[str]:
  """The answers to score for `example`; an error naming the example when it has none."""
  answers = task.option_answers(example) if hasattr(task, "option_answers") else None
  if not answers:
    raise ValueError(f"EvalConfig.metrics has 'likelihood', but example {example.get('id')!r} of "
                     f"split {split!r} of task {task.name!r} has no options to score (the task "
                     "needs option_answers(example) and each example an answer_index)")
  return list(answers)


def option_sequences(task, example: dict, tokenizer, split: str = "") -> list[dict]:
  """Per option: {"tokens": int32[n], "answer_mask": bool[n]}, the prompt, an empty thinking
  span and the option's answer with <eos> (`encode_sft` of the example with that answer)."""
  out = []
  for answer in option_answers(task, example, split):
    seq = encode_sft(task, {**example, "thinking": "", "steps": [], "answer": answer}, tokenizer)
    out.append({"tokens": seq["tokens"], "answer_mask": seq["answer_mask"]})
  return out


def option_logprobs(policy, task, examples: Sequence[dict], batch_size: int = 64,
                    split: str = "") -> list[np.ndarray]:
  """float64[num_options] per example: log p(option's answer, <eos> | prompt, empty thinking).

  The sequences are scored shortest first in chunks of `batch_size` rows, each chunk padded to a
  power-of-two length of its own (a few long in-context prompts do not pad every row)."""
  sequences = [option_sequences(task, ex, policy.tokenizer, split) for ex in examples]
  flat = [seq for options in sequences for seq in options]
  totals = np.zeros(len(flat), np.float64)
  order = sorted(range(len(flat)), key=lambda i: len(flat[i]["tokens"]))
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    totals[chunk] = _score_chunk(policy, [flat[i] for i in chunk], batch_size)
  out, start = [], 0
  for options in sequences:
    out.append(totals[start:start + len(options)])
    start += len(options)
  return out


def _score_chunk(policy, chunk: list[dict], rows: int) -> np.ndarray:
  """Summed answer log-probs of <= `rows` sequences, as one [rows, bucketed length] forward."""
  longest = max(len(s["tokens"]) for s in chunk)
  length = max(longest, min(_bucket(longest), policy.config.max_seq_len))
  pad = policy.tokenizer.pad_token_id or 0
  tokens = np.full((rows, length), pad, np.int32)
  valid = np.zeros((rows, length), bool)
  scored = np.zeros((rows, length), bool)
  valid[:, 0] = True  # padding rows: one token each, never scored
  for i, seq in enumerate(chunk):  # right-padded: the positions count from 0 in every row
    n = len(seq["tokens"])
    tokens[i, :n], valid[i, :n], scored[i, :n] = seq["tokens"], True, seq["answer_mask"]
  logprobs = scoring.score_in_chunks(policy.config, policy.params, tokens, valid,
                                     chunk_size=rows, mesh=policy.mesh)["logprobs"]
  return (np.asarray(logprobs, np.float64) * scored[:, 1:]).sum(axis=1)[:len(chunk)]


def score(policy, task, examples: Sequence[dict], rows: list[dict], batch_size: int = 64,
          split: str = "") -> None:
  """Fills each row's "option_logprobs", "likelihood_choice" and "likelihood_correct"."""
  for row, ex, lp in zip(rows, examples, option_logprobs(policy, task, examples, batch_size,
                                                        split)):
    choice = int(np.argmax(lp))
    row.update(option_logprobs=[float(v) for v in lp], likelihood_choice=choice,
               likelihood_correct=choice == int(ex["answer_index"]))
