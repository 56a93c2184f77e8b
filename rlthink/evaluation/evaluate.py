"""`rlthink.evaluate`: maj@1 (greedy), maj@k and pass@k per split, the way the papers report them."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import numpy as np

from rlthink.evaluation.estimators import maj_at_k, pass_at_k
from rlthink.rollout import rollout_examples
from rlthink.tasks.base import Task


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation settings.

  k: the vote / pass budget; n: samples drawn per question (n >= k; pass@k uses the unbiased
  estimator over all n). splits: None = every split of the task but "train".
  max_examples: evaluate the first this many examples of each split (None: all).
  """

  k: int = 8
  n: int | None = None
  splits: tuple[str, ...] | None = None
  max_examples: int | None = None
  max_new_tokens: int = 128
  temperature: float = 1.0
  top_p: float | None = None
  seed: int = 1234
  batch_size: int = 64

  def __post_init__(self):
    n = self.k if self.n is None else self.n
    if self.k < 1 or n < self.k:
      raise ValueError(f"EvalConfig: need 1 <= k <= n, got k={self.k}, n={self.n}")


def answer_key(task: Task, completion: str):
  """What majority voting compares: the task's own key when it defines one, else the normalized
  answer span (None when there is no answer span)."""
  if hasattr(task, "answer_key"):
    return task.answer_key(completion)
  span = task.format.split(completion).answer
  return None if span is None else " ".join(span.split()).lower() or None


def pass_curve_ks(n: int) -> list[int]:
  ks = [1]
  while ks[-1] * 2 <= n:
    ks.append(ks[-1] * 2)
  return ks if ks[-1] == n else ks + [n]


def evaluate_examples(policy, task: Task, examples: Sequence[dict], cfg: EvalConfig) -> dict:
  """Metrics over `examples` (see `evaluate`)."""
  n = cfg.n or cfg.k
  greedy = rollout_examples(policy, task, examples, num_samples=1,
                            max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed,
                            batch_size=cfg.batch_size)
  sampled = rollout_examples(policy, task, examples, num_samples=n,
                             max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             top_p=cfg.top_p, seed=cfg.seed + 1, batch_size=cfg.batch_size)
  correct = sampled.per_example(sampled.rewards >= 1.0)
  keys = sampled.per_example([answer_key(task, t) for t in sampled.texts])
  ks = pass_curve_ks(n)
  out = {
      "num_examples": len(examples),
      "maj@1": float(np.mean(greedy.rewards >= 1.0)),
      f"maj@{cfg.k}": float(np.mean([maj_at_k(a, c, cfg.k) for a, c in zip(keys, correct)])),
      f"pass@{cfg.k}": float(np.mean([pass_at_k(n, sum(c), cfg.k) for c in correct])),
      "sample_accuracy": float(np.mean(sampled.rewards >= 1.0)),
      "mean_completion_tokens": float(np.mean(sampled.rollouts.lengths)),
      "pass_curve": {str(k): float(np.mean([pass_at_k(n, sum(c), k) for c in correct]))
                     for k in ks},
  }
  return out


def evaluate(policy, task: Task, cfg: EvalConfig | None = None, **overrides) -> dict:
  """maj@1 (greedy), maj@k, pass@k (unbiased, from n >= k samples) for each split.

  Returns {split: {"maj@1", "maj@k", "pass@k", "sample_accuracy", "pass_curve": {k: pass@k},
  "num_examples", "mean_completion_tokens"}}. Overrides replace `EvalConfig` fields.
  """
  cfg = dataclasses.replace(cfg or EvalConfig(), **overrides)
  splits = cfg.splits or tuple(s for s in task.splits if s != "train") or task.splits
  results = {}
  for split in splits:
    task.check_split(split)
    source = task.examples(split)
    count = len(source) if cfg.max_examples is None else min(cfg.max_examples, len(source))
    results[split] = evaluate_examples(policy, task, [source[i] for i in range(count)], cfg)
  return results
