"""Algorithms: each is a config dataclass, a loss (a pure function) and its batch preparation.

The machinery is shared: `loop` runs the iterations of PPO, GRPO and START (sample -> reward ->
prepare -> minibatch epochs -> checkpoint -> evaluate), `rounds` the rounds of Expert Iteration,
RCRL and reward-model training (sample -> keep / label -> fine-tune); `config` holds the settings
they share (rollouts, rewards, the stage's optimizer overrides), `rl_math` the RL math, `scoring`
the scoring forwards, `positions` the resumable data positions, `stages` the uniform Python
signature `run_<algorithm>(policy, task, cfg, optimizer_cfg, directory, *, examples, evaluate,
reward_models, progress) -> (policy, history)`.

An experiment names its stages and gives each an algorithm (`Stage(name='rl_comp',
algorithm='grpo', parent='sft')`). `ALGORITHMS` maps an algorithm name to its config class and
driver ("module:attr" strings, imported lazily). Every driver has one signature:

    run(policy, cfg, ctx: StageContext) -> (policy, history)

`cfg` is the algorithm's config dataclass, built by the experiment runner from the stage's gin
scope (`rl_comp/GRPOConfig.learning_rate = 1e-4` binds only stage `rl_comp`); drivers never read
gin. The driver resumes from `ctx.directory` when a checkpoint is there, calls
`ctx.evaluate(policy, iteration, last)` after each iteration when it wants per-iteration
evaluation, and returns the trained policy and its per-iteration metrics (a list of dicts, each
with "iteration" and, for sampling algorithms, "samples": the completions drawn that iteration).
Register a new algorithm by adding it to `ALGORITHMS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """Where an algorithm lives: its config class and its driver, as "module:attr" strings."""

  config: str
  run: str

  def config_class(self) -> type:
    return _load(self.config)

  def runner(self) -> Callable:
    return _load(self.run)


ALGORITHMS: dict[str, Algorithm] = {
    "sft": Algorithm("rlthink.algorithms.sft:SFTConfig", "rlthink.algorithms.sft:run_stage"),
    "ei": Algorithm("rlthink.algorithms.expert_iteration:EIConfig",
                    "rlthink.algorithms.expert_iteration:run_stage"),
    "ppo": Algorithm("rlthink.algorithms.ppo:PPOConfig", "rlthink.algorithms.ppo:run_stage"),
    "grpo": Algorithm("rlthink.algorithms.grpo:GRPOConfig", "rlthink.algorithms.grpo:run_stage"),
    "start": Algorithm("rlthink.algorithms.start:STARTConfig",
                       "rlthink.algorithms.start:run_stage"),
    "rcrl": Algorithm("rlthink.algorithms.rcrl:RCRLConfig", "rlthink.algorithms.rcrl:run_stage"),
    "orm": Algorithm("rlthink.algorithms.reward_model:RewardModelConfig",
                     "rlthink.algorithms.reward_model:run_orm_stage"),
    "prm": Algorithm("rlthink.algorithms.reward_model:RewardModelConfig",
                     "rlthink.algorithms.reward_model:run_prm_stage"),
}


@dataclasses.dataclass(frozen=True)
class StageContext:
  """What the experiment runner hands a driver besides the policy and its config.

  name: the stage's name in the experiment; directory: `<workdir>/<name>`, where the driver keeps
    its checkpoints, metrics.jsonl and events.
  task: the stage's task. examples: the stage's training data (its split mixture, already
    materialized and deterministic given the seed), or None: the driver reads its config's split.
  optimizer: the stage's `OptimizerConfig` (its gin scope applied).
  seed: the experiment seed (a sweep's seed), already added into `cfg.seed` by the runner.
  evaluate: evaluate(policy, iteration, last) -> dict of metrics to record in the history (empty
    when the stage's `eval_every` skips that iteration); None: no per-iteration evaluation.
  stage_directory: name -> the directory of another stage of the experiment (e.g. the stage that
    trained a reward model); raises naming the stage when there is none.
  progress: show progress bars.
  """

  name: str
  directory: str
  task: Any
  examples: Sequence[dict] | None = None
  optimizer: Any = None
  seed: int = 0
  evaluate: Callable[[Any, int, bool], dict] | None = None
  stage_directory: Callable[[str], str] | None = None
  progress: bool = True

  def training_examples(self, split: str) -> Sequence[dict]:
    """The stage's examples, or `split` of its task when the experiment gave no mixture."""
    if self.examples is not None:
      return self.examples
    self.task.check_split(split)
    return self.task.examples(split)


def check_algorithm(name: str) -> str:
  if name not in ALGORITHMS:
    raise ValueError(f"unknown algorithm {name!r}; expected one of {sorted(ALGORITHMS)}")
  return name


def get(name: str) -> Algorithm:
  return ALGORITHMS[check_algorithm(name)]


def _load(target: str):
  module, attr = target.split(":")
  return getattr(importlib.import_module(module), attr)
