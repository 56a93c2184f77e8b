"""Sample-based accuracy estimators: pass@k (unbiased), maj@k (majority vote), rerank@k.

Conventions (documented in the README):
- pass@k from n >= k samples of which c are correct is the unbiased estimator
  1 - C(n-c, k) / C(n, k) (the probability that a random k-subset holds a correct sample).
- maj@k votes over the first k samples' extracted answers; unparsable answers (None) do not vote.
  Ties go to the answer whose first occurrence comes earliest in sample order, so the result is
  deterministic. No votes at all counts as wrong.
- rerank@k picks, among the first k samples, the one a scorer (e.g. an ORM) rates highest; ties go
  to the earliest sample.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one problem with c correct among n samples."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0
  # 1 - prod_{i=n-c+1}^{n} (1 - k/i), numerically stable for large n.
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
  """Most frequent non-None answer; ties broken by earliest first occurrence."""
  counts = Counter(a for a in answers if a is not None)
  if not counts:
    return None
  first = {}
  for i, a in enumerate(answers):
    if a is not None and a not in first:
      first[a] = i
  return min(counts, key=lambda a: (-counts[a], first[a]))


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int) -> float:
  """1.0 when the majority answer of the first k samples is a correct one."""
  if not 1 <= k <= len(answers):
    raise ValueError(f"maj@{k} needs at least {k} samples, got {len(answers)}")
  winner = majority_vote(answers[:k])
  if winner is None:
    return 0.0
  return float(any(c for a, c in zip(answers[:k], correct[:k]) if a == winner))


def rerank_at_k(scores: Sequence[float], correct: Sequence[bool], k: int) -> float:
  """1.0 when the highest-scored of the first k samples is correct (ties: earliest)."""
  if not 1 <= k <= len(scores):
    raise ValueError(f"rerank@{k} needs at least {k} samples, got {len(scores)}")
  return float(bool(correct[int(np.argmax(np.asarray(scores[:k], dtype=np.float64)))]))
