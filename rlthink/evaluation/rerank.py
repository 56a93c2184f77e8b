"""rerank@k with an outcome reward model (Havrilla et al. 2024), next to maj@k and pass@k.

For each question, n >= k solutions are sampled; rerank@k keeps the one of the first k that the ORM
scores highest (`estimators.rerank_at_k`), maj@k votes over the same k, pass@k is the unbiased
estimate from all n. The ORM's own quality on these samples is reported too: accuracy of
"probability >= 0.5" against the verifier, and AUC.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rlthink.evaluation.estimators import maj_at_k, pass_at_k, rerank_at_k
from rlthink.evaluation.evaluate import answer_key, pass_curve_ks
from rlthink.rewards.reward_model import binary_auc, score_rollouts
from rlthink.rollout import rollout_examples


@dataclasses.dataclass(frozen=True)
class RerankConfig:
  """rerank@k evaluation. n: samples per question (default k). enabled: whether the "orm" stage
  runs it after training. max_examples: the first this many examples of `split` (None: all)."""

  enabled: bool = True
  k: int = 8
  n: int | None = None
  split: str = "test"
  max_examples: int | None = 100
  max_new_tokens: int = 128
  temperature: float = 1.0
  seed: int = 4321
  batch_size: int = 64
  score_batch_size: int = 64

  def __post_init__(self):
    if self.k < 1 or (self.n is not None and self.n < self.k):
      raise ValueError(f"RerankConfig: need 1 <= k <= n, got k={self.k}, n={self.n}")


def rerank_examples(policy, task, reward_model, examples: Sequence[dict],
                    cfg: RerankConfig) -> dict:
  """rerank@k, maj@k, pass@k and the ORM's accuracy/AUC over `examples`; "rerank_curve" and
  "maj_curve" hold the same at k = 1, 2, 4, ... up to n (over the first k samples)."""
  n = cfg.n or cfg.k
  scored = rollout_examples(policy, task, list(examples), num_samples=n,
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            seed=cfg.seed, batch_size=cfg.batch_size)
  probs = score_rollouts(reward_model, scored.rollouts, cfg.score_batch_size)
  right = scored.rewards >= 1.0
  correct, scores = scored.per_example(right), scored.per_example(probs)
  keys = scored.per_example([answer_key(task, t) for t in scored.texts])
  rerank = lambda k: float(np.mean([rerank_at_k(s, c, k) for s, c in zip(scores, correct)]))
  majority = lambda k: float(np.mean([maj_at_k(a, c, k) for a, c in zip(keys, correct)]))
  ks = pass_curve_ks(n)
  return {
      "num_examples": len(correct),
      f"rerank@{cfg.k}": rerank(cfg.k),
      f"maj@{cfg.k}": majority(cfg.k),
      f"pass@{cfg.k}": float(np.mean([pass_at_k(n, sum(c), cfg.k) for c in correct])),
      "sample_accuracy": float(np.mean(right)),
      "orm_accuracy": float(np.mean((probs >= 0.5) == right)),
      "orm_auc": binary_auc(probs, right),
      "rerank_curve": {str(k): rerank(k) for k in ks},
      "maj_curve": {str(k): majority(k) for k in ks},
  }


def evaluate_rerank(policy, task, reward_model, cfg: RerankConfig | None = None,
                    **overrides) -> dict:
  """{split: rerank_examples(...)} for `cfg.split` (overrides replace `RerankConfig` fields)."""
  cfg = dataclasses.replace(cfg or RerankConfig(), **overrides)
  source = task.examples(task.check_split(cfg.split))
  count = len(source) if cfg.max_examples is None else min(cfg.max_examples, len(source))
  return {cfg.split: rerank_examples(policy, task, reward_model,
                                     [source[i] for i in range(count)], cfg)}
