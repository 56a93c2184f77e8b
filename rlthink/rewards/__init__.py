"""Rewards beyond the task's verifier (`Task.verify`, the sparse final-answer reward):

- `reward_model`: learned outcome (ORM) and process (PRM) reward models on the decoder's "reward"
  head: labels from sampled solutions, the loss, scoring (`score_rollouts`, `reward_logits`).
- `training`: `train_reward_model`, `load_reward_model`, and the "orm" / "prm" experiment stages.
- `dense`: per-step rewards from matching the task's reference steps or from a PRM, placed on the
  tokens that end each step (the token frame of `rlthink.algorithms.core`).
"""

from rlthink.rewards.dense import (match_steps, prm_rewards, returns_to_go, step_match_rewards,
                                   token_char_ends)
from rlthink.rewards.reward_model import (RewardModel, RewardModelConfig, init_reward_model,
                                          reward_model_loss, score_rollouts)

__all__ = ["RewardModel", "RewardModelConfig", "init_reward_model", "match_steps", "prm_rewards",
           "returns_to_go", "reward_model_loss", "score_rollouts", "step_match_rewards",
           "token_char_ends"]
