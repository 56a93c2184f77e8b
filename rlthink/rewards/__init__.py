"""Rewards beyond the task's verifier (`Task.verify`, the sparse final-answer reward):

- `reward_model`: learned outcome (ORM) and process (PRM) reward models on the decoder's "reward"
  head: labels from sampled solutions, the loss, scoring (`score_rollouts`, `reward_logits`),
  `load_reward_model`. Training them is an algorithm (`rlthink.algorithms.reward_model`).
- `dense`: completions cut into steps, steps matched against the task's reference steps, step
  rewards placed on the tokens that end each step (the token frame of `rlthink.sampling.rollouts`).
- `sources`: the rewards an RL algorithm trains on, from its reward options (verifier or ORM,
  plus optional dense rewards from step matching or a PRM, `prm_rewards`).
"""

from rlthink.rewards.dense import match_steps, returns_to_go, step_match_rewards, token_char_ends
from rlthink.rewards.reward_model import (RewardModel, init_reward_model, load_reward_model,
                                          reward_model_loss, score_rollouts)
from rlthink.rewards.sources import Rewards, compute_rewards, prm_rewards

__all__ = ["RewardModel", "Rewards", "compute_rewards", "init_reward_model", "load_reward_model",
           "match_steps", "prm_rewards", "returns_to_go", "reward_model_loss", "score_rollouts",
           "step_match_rewards", "token_char_ends"]
