"""The settings the sampling algorithms share, as plain dataclasses the algorithm configs extend.

    RolloutConfig               what to sample and how: split, temperature, batch sizes, seed,
     |                          and this stage's learning-rate / warm-up overrides
     +- RewardModelConfig       (ORM / PRM training, `rlthink.algorithms.reward_model`)
     +- RLConfig                + iterations and the reward the policy is trained on
         +- IterationConfig     + the rollout batch and its minibatch epochs: PPO, GRPO, START
         +- RoundConfig         + a round's fine-tuning on accumulated samples: EI, RCRL

Rewards (`RLConfig`): `reward_source` is the sparse final reward, "verifier" (the task's answer
check, the default) or "orm" (a learned outcome reward model's probability); `dense_reward` adds
per-step rewards, None (the default), "step_match" (steps matching the task's reference steps)
or "prm" (a process reward model), scaled by `dense_coef`. The reward models come from the stages
named by `orm_stage` / `prm_stage` (`rlthink.rewards.sources`).

A subclass re-declares a field to change its default (dataclass fields keep their first place).
Every config checks its values in `__post_init__` and names the bad field.
"""

from __future__ import annotations

import dataclasses
import math

from rlthink.algorithms.rl_math import check_choice
from rlthink.rewards import sources


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Fields of every algorithm that samples completions of training questions.

  num_questions: the first this many questions of the training data form the pool (None: all).
  split: the task split trained on (unless the experiment gives the stage a split mixture).
  temperature, max_new_tokens: sampling.
  sample_batch_size: prompts per sampler call; score_batch_size: rows per scoring forward.
  learning_rate / warmup_steps: this stage's schedule (None: the OptimizerConfig's).
  seed: sampling and data order; log_every: train-step metrics logged every this many steps.
  """

  num_questions: int | None = None
  split: str = "train"
  temperature: float = 1.0
  max_new_tokens: int = 64
  sample_batch_size: int = 256
  score_batch_size: int = 64
  learning_rate: float | None = None
  warmup_steps: int | None = None
  seed: int = 0
  log_every: int = 10

  def __post_init__(self):
    counts = ["max_new_tokens", "sample_batch_size", "score_batch_size", "log_every"]
    counts += [k for k in ("num_questions",) if getattr(self, k) is not None]
    check_counts(self, counts)
    if self.temperature < 0 or (self.learning_rate is not None and self.learning_rate <= 0) or (
        self.warmup_steps is not None and self.warmup_steps < 0):
      raise ValueError(f"{type(self).__name__}: temperature={self.temperature} (>= 0), "
                       f"learning_rate={self.learning_rate} (> 0 or None), "
                       f"warmup_steps={self.warmup_steps} (>= 0 or None)")


@dataclasses.dataclass(frozen=True)
class RLConfig(RolloutConfig):
  """An RL stage: `iterations` rounds of sampling and training on a reward (module docstring)."""

  iterations: int = 10
  reward_source: str = "verifier"
  dense_reward: str | None = None
  dense_coef: float = 0.5
  orm_stage: str = "orm"
  prm_stage: str = "prm"

  def __post_init__(self):
    super().__post_init__()
    name = type(self).__name__
    check_counts(self, ["iterations"])
    check_choice(f"{name}.reward_source", self.reward_source, sources.REWARD_SOURCES)
    if self.dense_reward is not None:
      check_choice(f"{name}.dense_reward", self.dense_reward, sources.DENSE_REWARDS)


@dataclasses.dataclass(frozen=True)
class IterationConfig(RLConfig):
  """PPO, GRPO, START: each iteration samples `samples_per_prompt` completions of
  `prompts_per_iteration` questions and runs `epochs` passes of minibatch updates over them.

  minibatch_size: rows per optimizer step (None: the whole rollout batch, one step per epoch).
  checkpoint_every: a checkpoint after every this many iterations and after the last. A run
    killed in between resumes from the last one and repeats the iterations since, with the same
    questions, samples and updates (all are functions of the seed and the iteration), so it ends
    as the uninterrupted run does; more than 1 saves the time of the other checkpoints.
  """

  prompts_per_iteration: int = 16
  samples_per_prompt: int = 8
  epochs: int = 1
  minibatch_size: int | None = None
  checkpoint_every: int = 1

  def __post_init__(self):
    super().__post_init__()
    counts = ["prompts_per_iteration", "samples_per_prompt", "epochs", "checkpoint_every"]
    check_counts(self, counts + (["minibatch_size"] if self.minibatch_size is not None else []))
    if self.minibatch_size is not None and self.minibatch_size > self.rows:
      raise ValueError(f"{type(self).__name__}: minibatch_size={self.minibatch_size} is more than "
                       f"the rollout batch, prompts_per_iteration * samples_per_prompt = "
                       f"{self.rows}")

  @property
  def rows(self) -> int:
    """Rows of one iteration's rollout batch."""
    return self.prompts_per_iteration * self.samples_per_prompt

  @property
  def steps_per_iteration(self) -> int:
    """Optimizer steps per iteration: epochs * ceil(rows / minibatch_size)."""
    return self.epochs * -(-self.rows // (self.minibatch_size or self.rows))

  @property
  def on_policy(self) -> bool:
    """One optimizer step per iteration: the params it updates are the ones that sampled the
    batch, so its ratios are exactly 1 (GRPO and START then skip the old log-probs' forward)."""
    return self.steps_per_iteration == 1


@dataclasses.dataclass(frozen=True)
class RoundConfig(RLConfig):
  """EI, RCRL: each round samples `samples_per_question` completions per question, keeps or
  labels them by their reward, and fine-tunes on the round's data.

  epochs, max_steps_per_iteration: steps = ceil(epochs * |data| / batch_size), capped.
  batch_size, max_length: the fine-tuning batches (rows of at most max_length tokens).
  checkpoint_every: a checkpoint every this many fine-tuning steps.
  A round keeps or labels each sample by one number, its return: the final reward plus the sum
  of its dense rewards (EI; RCRL takes no dense rewards).
  """

  iterations: int = 3
  samples_per_question: int = 4
  epochs: float = 2.0
  max_steps_per_iteration: int | None = None
  batch_size: int = 32
  max_length: int = 256
  checkpoint_every: int = 100

  def __post_init__(self):
    super().__post_init__()
    name = type(self).__name__
    check_counts(self, ["samples_per_question", "batch_size", "checkpoint_every"] + (
        ["max_steps_per_iteration"] if self.max_steps_per_iteration is not None else []))
    if self.epochs <= 0 or self.max_length < 2:
      raise ValueError(f"{name}: epochs={self.epochs} must be > 0 and max_length="
                       f"{self.max_length} >= 2")

  def steps_for(self, num_rows: int) -> int:
    """Fine-tuning steps of a round over `num_rows` sequences."""
    return fine_tuning_steps(self.epochs, num_rows, self.batch_size,
                             self.max_steps_per_iteration)


def fine_tuning_steps(epochs: float, num_rows: int, batch_size: int,
                      max_steps: int | None) -> int:
  """ceil(epochs * num_rows / batch_size), at least 1, capped by max_steps."""
  steps = max(1, math.ceil(epochs * num_rows / batch_size))
  return min(steps, max_steps or steps)


def check_counts(cfg, names) -> None:
  """Raises a ValueError naming each of the fields `names` of `cfg` that is below 1."""
  bad = [f"{k}={getattr(cfg, k)}" for k in names if getattr(cfg, k) < 1]
  if bad:
    raise ValueError(f"{type(cfg).__name__}: {', '.join(bad)} (must be >= 1)")


def stage_optimizer(optimizer_cfg, cfg):
  """`optimizer_cfg` (an `OptimizerConfig`) with the stage config's learning_rate and
  warmup_steps where they are set."""
  changes = {k: getattr(cfg, k) for k in ("learning_rate", "warmup_steps")
             if getattr(cfg, k, None) is not None}
  return dataclasses.replace(optimizer_cfg, **changes) if changes else optimizer_cfg
