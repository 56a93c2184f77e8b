"""Dense (per-step) rewards: completions cut into steps, steps matched against the task's reference
steps, and step rewards placed on tokens (a process reward model's: `sources.prm_rewards`).

Text and tokens. Every function here works on the decoded completion text (the one the verifier
reads) and maps text positions back to tokens with `token_char_ends`, so it holds for any
tokenizer, and a step or marker ends on the token whose text completes it.

Steps. The thinking span (`thinking_bounds`, the same rule as the verifier's split: everything
before the LAST closing marker, after the first opening marker) is cut into steps at newlines and
after sentence ends (`STEP_PATTERN`): "3+4=7\\n7-2=5" and "Ava's friend is Ben. Ben lives in Oslo."
both give two steps. An unclosed thinking span still has steps (the text after the opener).

Matching (`match_steps`): two steps are the same when their equations are (canonical "a op b = r"
forms, when both hold equations) or else when their normalized texts are equal. "prefix": step k
matches when steps 1..k all equal reference steps 1..k (after the first wrong step nothing counts:
the process-label convention); "any": a step matches some not yet matched reference step, in any
order.

The token frame. Reward arrays are float32[N, P + C - 1] like every per-token array of the RL
math (`rlthink.sampling.rollouts`): column t is about token t + 1, so completion token j sits in
column P - 1 + j.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from rlthink.tasks import answers
from rlthink.tasks.base import PromptFormat

STEP_PATTERN = r"\n+|(?<=[.!?;])[ \t]+"
MATCH_MODES = ("prefix", "any")


# ------------------------------------------------------------------------------------------------
# Text <-> tokens.


def token_char_ends(tokenizer, token_ids: Sequence[int]) -> np.ndarray:
  """int64[n]: ends[j] = len(decode(token_ids[:j + 1])) with special tokens skipped (as
  `decode_completions` decodes), so token j covers text[ends[j - 1]:ends[j]].

  Uses per-token decodes when they concatenate to the whole text (character and most BPE
  tokenizers), else decodes every prefix (byte-level pieces of one character, word-piece spaces).
  """
  ids = [int(t) for t in token_ids]
  if not ids:
    return np.zeros((0,), np.int64)
  decode = lambda x: tokenizer.decode(x, skip_special_tokens=True)
  pieces = [decode([t]) for t in ids]
  if "".join(pieces) == decode(ids):
    return np.cumsum([len(p) for p in pieces]).astype(np.int64)
  return np.asarray([len(decode(ids[:j + 1])) for j in range(len(ids))], np.int64)


def token_at_char(char_ends: np.ndarray, position: int) -> int:
  """The index of the token whose text contains character `position - 1`: the token that
  completes text[:position]. `position` must be in 1..len(text)."""
  return int(np.searchsorted(char_ends, position, side="left"))


# ------------------------------------------------------------------------------------------------
# Steps of a completion.


def thinking_bounds(text: str, fmt: PromptFormat) -> tuple[int, int, bool]:
  """(start, end, closed): the thinking text is text[start:end] (markers excluded).

  closed: a closing marker was found; end is then where the LAST one starts. Unclosed: the span
  runs to the end of the text. start is after the first opening marker before `end` (0 when the
  prompt opened the thinking or there is none).
  """
  close = text.rfind(fmt.think_close)
  closed = close >= 0
  end = close if closed else len(text)
  opener = text.find(fmt.think_open, 0, end) if not fmt.open_thinking_in_prompt else -1
  start = opener + len(fmt.think_open) if opener >= 0 else 0
  return start, end, closed


def split_steps(text: str, start: int = 0, end: int | None = None,
                pattern: str = STEP_PATTERN) -> list[tuple[int, int]]:
  """Character spans (a, b) of the non-empty steps of text[start:end], whitespace trimmed."""
  end = len(text) if end is None else end
  spans, cursor = [], start
  for sep in re.finditer(pattern, text[start:end]):
    spans.append((cursor, start + sep.start()))
    cursor = start + sep.end()
  spans.append((cursor, end))
  out = []
  for a, b in spans:
    piece = text[a:b]
    lead, trail = len(piece) - len(piece.lstrip()), len(piece) - len(piece.rstrip())
    if piece.strip():
      out.append((a + lead, b - trail))
  return out


def completion_steps(text: str, fmt: PromptFormat,
                     pattern: str = STEP_PATTERN) -> list[tuple[int, int]]:
  """The step spans of a completion's thinking text (see the module docstring)."""
  start, end, _ = thinking_bounds(text, fmt)
  return split_steps(text, start, end, pattern)


def steps_match(step: str, reference: str) -> bool:
  """Same equations (when both hold any), else the same normalized text."""
  eq_a, eq_b = answers.find_equations(step), answers.find_equations(reference)
  if eq_a and eq_b:
    return eq_a == eq_b
  a, b = answers.normalize_text(step), answers.normalize_text(reference)
  return bool(a) and a == b


def match_steps(steps: Sequence[str], references: Sequence[str],
                mode: str = "prefix") -> list[bool]:
  """Per step of a solution: does it match the reference steps (module docstring)?"""
  if mode not in MATCH_MODES:
    raise ValueError(f"step match mode {mode!r} is not one of {MATCH_MODES}")
  if mode == "prefix":
    out, ok = [], True
    for k, step in enumerate(steps):
      ok = ok and k < len(references) and steps_match(step, references[k])
      out.append(ok)
    return out
  free = list(references)
  out = []
  for step in steps:
    hit = next((i for i, ref in enumerate(free) if steps_match(step, ref)), None)
    if hit is not None:
      free.pop(hit)
    out.append(hit is not None)
  return out


def thinking_matches(text: str, references: Sequence[str], fmt: PromptFormat,
                     pattern: str = STEP_PATTERN) -> bool:
  """The completion's thinking is exactly the reference steps, in order (its thinking quality,
  apart from its answer)."""
  steps = [text[a:b] for a, b in completion_steps(text, fmt, pattern)]
  return len(steps) == len(references) and all(match_steps(steps, references, "prefix"))


def step_tokens(tokenizer, completion_ids: Sequence[int], text: str, fmt: PromptFormat,
                pattern: str = STEP_PATTERN) -> tuple[list[str], list[int]]:
  """(step texts, index of the completion token that ends each step)."""
  spans = completion_steps(text, fmt, pattern)
  if not spans:
    return [], []
  ends = token_char_ends(tokenizer, completion_ids)
  return [text[a:b] for a, b in spans], [token_at_char(ends, b) for _, b in spans]


# ------------------------------------------------------------------------------------------------
# Per-token reward arrays (token frame).


def place_rewards(rollouts, rewards: Sequence[Sequence[tuple[int, float]]]) -> np.ndarray:
  """float32[N, P + C - 1]: rewards[row] = [(completion token index, reward), ...] put in the
  token frame (completion token j -> column P - 1 + j); rewards on one token add up."""
  n, p = rollouts.prompt_tokens.shape
  out = np.zeros((n, p + rollouts.completion_tokens.shape[1] - 1), np.float32)
  for row, items in enumerate(rewards):
    for j, r in items:
      if not 0 <= j < int(rollouts.lengths[row]):
        raise ValueError(f"row {row}: reward on completion token {j}, but the row has "
                         f"{int(rollouts.lengths[row])} tokens")
      out[row, p - 1 + j] += r
  return out


def step_match_rewards(task, scored, tokenizer, coef: float = 1.0, mode: str = "prefix",
                       normalize: bool = True, pattern: str = STEP_PATTERN) -> np.ndarray:
  """Dense rewards for steps that match the reference steps (Havrilla et al. 2024).

  Each matched step earns coef / (number of reference steps) when `normalize` (a solution whose
  steps all match earns coef in total), else coef, on the token that ends it; other steps earn 0.
  scored: `ScoredRollouts`. Returns float32[N, P + C - 1] (token frame).
  """
  ro, per_row = scored.rollouts, []
  for row, text in enumerate(scored.texts):
    example = scored.examples[row // scored.num_samples]
    references = task.steps(example)
    if references is None:
      raise ValueError(f"task {task.name!r} has no step annotations (example field 'steps'): "
                       "step-matching rewards need them")
    steps, ends = step_tokens(tokenizer, ro.completion(row), text, task.format, pattern)
    scale = coef / max(len(references), 1) if normalize else coef
    per_row.append([(j, scale) for j, ok in zip(ends, match_steps(steps, references, mode))
                    if ok])
  return place_rewards(ro, per_row)


def returns_to_go(rewards: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """float32[B, T']: sum of rewards[b, t'] over masked columns t' >= t (0 where mask is False)."""
  rewards = np.where(mask, rewards, 0.0).astype(np.float32)
  out = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1]
  return np.where(mask, out, 0.0).astype(np.float32)
