"""The rewards an RL algorithm trains on, from its reward options (`rlthink.algorithms.config`).

Final reward, one per sampled completion (`reward_source`):
  "verifier"  the task's check of the answer span (`Task.verify`, 0..1), the default;
  "orm"       a learned outcome reward model's probability that the completion is right.
Dense rewards, per token in the token frame float32[N, P + C - 1] (`dense_reward`):
  None          none, the default;
  "step_match"  dense_coef / (reference steps) on the token that ends each step matching the
                task's reference steps (`dense.step_match_rewards`);
  "prm"         dense_coef * (p - 0.5) on the token that ends each step, p the process reward
                model's probability that the step is right (`prm_rewards`).
How an algorithm uses dense rewards is its choice (PPO: per-token rewards into GAE; GRPO: summed
into the completion's reward before the group baseline; START: returns-to-go added to the group
advantage).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from rlthink.rewards import dense
from rlthink.rewards import reward_model as rm_lib

REWARD_SOURCES = ("verifier", "orm")
DENSE_REWARDS = ("step_match", "prm")
MODEL_KINDS = {"orm": "outcome", "prm": "process"}  # reward model name -> RewardModel.kind


@dataclasses.dataclass(frozen=True)
class Rewards:
  """final: float32[N] the reward of each completion the algorithm trains on; dense:
  float32[N, P + C - 1] per-token rewards (already scaled by dense_coef), or None."""

  final: np.ndarray
  dense: np.ndarray | None = None

  @property
  def returns(self) -> np.ndarray:
    """float32[N]: each completion's undiscounted return, its final reward plus the sum of its
    dense rewards (what Expert Iteration keeps a sample by)."""
    if self.dense is None:
      return self.final
    return (self.final + self.dense.sum(axis=-1)).astype(np.float32)


def needed_models(reward_source: str, dense_reward: str | None) -> dict[str, str]:
  """{name: kind} of the reward models these options read: "orm" -> "outcome", "prm" ->
  "process"."""
  names = (["orm"] if reward_source == "orm" else []) + (["prm"] if dense_reward == "prm" else [])
  return {name: MODEL_KINDS[name] for name in names}


def prm_rewards(reward_model, task, scored, tokenizer, coef: float = 1.0,
                baseline: float = 0.5, pattern: str = dense.STEP_PATTERN,
                batch_size: int = 32) -> np.ndarray:
  """Dense rewards from a process reward model: coef * (p_k - baseline) on the token that ends
  step k, with p_k the PRM's probability that step k is right. baseline 0.5 rewards the steps the
  PRM believes and penalizes the others. Returns float32[N, P + C - 1] (token frame)."""
  ro = scored.rollouts
  ends = [dense.step_tokens(tokenizer, ro.completion(row), text, task.format, pattern)[1]
          for row, text in enumerate(scored.texts)]
  probs = rm_lib.score_rollout_tokens(reward_model, ro, ends, batch_size=batch_size)
  return dense.place_rewards(ro, [[(j, coef * (float(p) - baseline)) for j, p in zip(js, ps)]
                                  for js, ps in zip(ends, probs)])


def compute_rewards(scored, task, tokenizer, *, reward_source: str = "verifier",
                    dense_reward: str | None = None, dense_coef: float = 0.5,
                    models: Mapping[str, rm_lib.RewardModel] | None = None,
                    batch_size: int = 64) -> Rewards:
  """The `Rewards` of `scored` (`ScoredRollouts`) under the options; `models` holds the reward
  models `needed_models` names. batch_size: rows per reward-model forward."""
  models = models or {}
  for name in needed_models(reward_source, dense_reward):
    if name not in models:
      raise ValueError(f"the reward options read a {MODEL_KINDS[name]} reward model "
                       f"({name!r}), but none was given")
  final = np.asarray(scored.rewards, np.float32)
  if reward_source == "orm":
    final = rm_lib.score_rollouts(models["orm"], scored.rollouts, batch_size)
  elif reward_source != "verifier":
    raise ValueError(f"reward_source={reward_source!r} is not one of {REWARD_SOURCES}")
  per_token = None
  if dense_reward == "step_match":
    per_token = dense.step_match_rewards(task, scored, tokenizer, dense_coef)
  elif dense_reward == "prm":
    per_token = prm_rewards(models["prm"], task, scored, tokenizer, dense_coef,
                            batch_size=batch_size)
  elif dense_reward is not None:
    raise ValueError(f"dense_reward={dense_reward!r} is not one of {(None,) + DENSE_REWARDS}")
  return Rewards(final, per_token)
