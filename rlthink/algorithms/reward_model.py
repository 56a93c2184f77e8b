"""Training outcome (ORM) and process (PRM) reward models: the "orm" and "prm" stages.

`train_reward_model(policy, task, cfg, optimizer_cfg, directory)` samples solutions from `policy`,
labels them (`rlthink.rewards.reward_model.outcome_rows` / `process_rows`), holds out a fraction
of the questions, trains the reward model (the policy's trunk with a zero "reward" head) and
evaluates it on its training rows ("fit_*": how well it learned them) and on the held-out
questions ("holdout_*": how well it generalizes). It is one round of `rlthink.algorithms.rounds`:
the checkpoints in `directory` hold the train state, their JSON meta the phase, the data position,
the labelled rows and the history, so a killed run resumes exactly. `load_reward_model(directory,
kind, policy)` (in `rlthink.rewards`) reads the finished model back.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from rlthink.algorithms import positions, rcrl, rounds, stages
from rlthink.algorithms.config import RolloutConfig, check_counts, fine_tuning_steps
from rlthink.algorithms.rl_math import check_choice
from rlthink.models import lora
from rlthink.rewards import dense
from rlthink.rewards import reward_model as rm_lib
from rlthink.rollout import rollout_examples

STAGE_NAMES = {"outcome": "orm", "process": "prm"}  # kind -> the log prefix and stage name
CONDITIONS = ("rcrl",)

@dataclasses.dataclass(frozen=True)
class RewardModelConfig(RolloutConfig):
  """Reward-model training; the sampling fields are `RolloutConfig`'s. The "orm" and "prm"
  stages set `kind` themselves and read the rest in their gin scope (`orm/`, `prm/`).

  kind: "outcome" (ORM) or "process" (PRM).
  num_questions / samples_per_question: the sampled training set (questions of `split`).
  holdout_fraction: questions kept out of training to measure accuracy and AUC.
  include_references: add each question's reference solution (label 1, every step right).
  orm_targets: "last" (ORM logit on the last token) or "all" (on every completion token).
  step_match / step_pattern: PRM labels (see `rlthink.rewards.dense`).
  condition: None, or "rcrl": sample with prompts that carry RCRL's "correct" label (its default
    label and position), as an RCRL policy is sampled and evaluated (`EvalConfig.condition`), so
    an ORM trained on an RCRL stage's samples learns on the prompts it reranks.
  epochs, max_steps: steps = ceil(epochs * rows / batch_size), capped by max_steps.
  batch_size, max_length: training batches; checkpoint_every: steps between checkpoints.
  """

  kind: str = "outcome"
  num_questions: int | None = 256
  samples_per_question: int = 4
  holdout_fraction: float = 0.1
  include_references: bool = False
  orm_targets: str = "last"
  step_match: str = "prefix"
  step_pattern: str = dense.STEP_PATTERN
  condition: str | None = None
  epochs: float = 4.0
  max_steps: int | None = None
  batch_size: int = 32
  max_length: int = 256
  checkpoint_every: int = 100

  def __post_init__(self):
    super().__post_init__()
    check_choice("RewardModelConfig.kind", self.kind, rm_lib.KINDS)
    check_choice("RewardModelConfig.orm_targets", self.orm_targets, rm_lib.ORM_TARGETS)
    check_choice("RewardModelConfig.step_match", self.step_match, dense.MATCH_MODES)
    if self.condition is not None:
      check_choice("RewardModelConfig.condition", self.condition, CONDITIONS)
    check_counts(self, ["samples_per_question", "batch_size", "checkpoint_every"] + (
        ["max_steps"] if self.max_steps is not None else []))
    if self.epochs <= 0 or not 0 <= self.holdout_fraction < 1 or self.max_length < 2:
      raise ValueError(f"RewardModelConfig: epochs={self.epochs} (> 0), holdout_fraction="
                       f"{self.holdout_fraction} (in [0, 1)), max_length={self.max_length} (>= 2)")


def holdout_split(num_questions: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train question indices, held-out question indices): a seeded permutation's tail is held out
  (at least one question when fraction > 0 and there are two or more)."""
  perm = np.random.default_rng([seed, 4099]).permutation(num_questions)
  held = int(round(fraction * num_questions))
  if fraction > 0 and num_questions >= 2:
    held = min(max(held, 1), num_questions - 1)
  return np.sort(perm[:num_questions - held]), np.sort(perm[num_questions - held:])


def labelled_rows(policy, task, cfg: RewardModelConfig, questions: list[dict]) -> tuple[list, dict]:
  """(rows, {"sample_accuracy"}) from `cfg.samples_per_question` samples of each question."""
  scored = rollout_examples(policy, task, questions, num_samples=cfg.samples_per_question,
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            seed=cfg.seed * 100_003 + 17, batch_size=cfg.sample_batch_size)
  if cfg.kind == "outcome":
    rows = rm_lib.outcome_rows(scored, cfg.orm_targets)
  else:
    rows = rm_lib.process_rows(task, scored, policy.tokenizer, cfg.step_match, cfg.step_pattern)
  return rows, {"sample_accuracy": float(np.mean(scored.rewards >= 1.0)),
                "samples": len(scored.texts)}


def sampled_rows(policy, task, cfg: RewardModelConfig, questions: list[dict]):
  """(train rows, held-out rows, stats: sample accuracies, samples drawn) from samples of
  `questions`."""
  train_q, held_q = holdout_split(len(questions), cfg.holdout_fraction, cfg.seed)
  rows, stats = {}, {"samples": 0}
  for name, indices in (("train", train_q), ("holdout", held_q)):
    chosen = [questions[int(i)] for i in indices]
    rows[name] = []
    if chosen:
      rows[name], part = labelled_rows(policy, task, cfg, chosen)
      stats[f"{name}_sample_accuracy"] = part["sample_accuracy"]
      stats["samples"] += part["samples"]
    if name == "train" and cfg.include_references:
      rows[name] += rm_lib.reference_rows(task, chosen, policy.tokenizer, cfg.kind,
                                          cfg.orm_targets, cfg.step_pattern)
  if not rows["train"]:
    raise RuntimeError(f"no {cfg.kind} reward-model training rows: the sampled completions have "
                       "no steps / tokens (raise max_new_tokens or train the policy first)")
  return rows["train"], rows["holdout"], stats


def train_reward_model(policy, task, cfg: RewardModelConfig, optimizer_cfg, directory: str, *,
                       examples: Sequence[dict] | None = None, evaluate: Callable | None = None,
                       reward_models: Mapping | None = None,
                       progress: bool = True) -> tuple[rm_lib.RewardModel, list[dict]]:
  """Trains (or resumes, or reloads when finished) a reward model in `directory`; returns
  (model, history). The keyword arguments are every driver's (`rlthink.algorithms.stages`);
  `evaluate` and `reward_models` are accepted for uniformity and unused (the model is no policy,
  and its labels come from the task)."""
  del evaluate, reward_models
  policy = lora.full_finetuning(policy, optimizer_cfg.lora, "reward-model training")
  stages.check_tokenizer(policy, "reward-model training")
  if cfg.condition == "rcrl":
    task = rcrl.ConditionedTask(task)
  questions = stages.training_questions(task, cfg, examples)
  initial = rm_lib.init_reward_model(policy, cfg.kind)
  pad_id = policy.config.pad_token_id or policy.tokenizer.pad_token_id or 0

  def collect(i, state, frozen, meta):
    train_rows, held_rows, stats = sampled_rows(policy, task, cfg, questions)
    record = {"iteration": 1, "samples": stats.pop("samples"), "train_rows": len(train_rows),
              "holdout_rows": len(held_rows), **stats}
    return record, {"dataset": train_rows, "holdout": held_rows}

  def batches(meta, i):
    rows = meta["dataset"]
    return lambda step: rm_lib.make_batch(
        [rows[int(r)] for r in positions.minibatch_rows(len(rows), cfg.batch_size, step,
                                                        [cfg.seed, 7])],
        cfg.max_length, pad_id)

  def finish(i, state, meta, last):
    model = dataclasses.replace(initial, params=state.params)
    out = {}
    for prefix, key in (("fit", "dataset"), ("holdout", "holdout")):
      metrics = rm_lib.evaluate_rows(model, meta[key], cfg.max_length, pad_id,
                                     cfg.score_batch_size)
      out.update({f"{prefix}_{k}": v for k, v in metrics.items()})
    return out

  round_ = rounds.Round(
      name=STAGE_NAMES[cfg.kind], loss_fn=rm_lib.reward_model_loss(policy.config, policy.mesh),
      template=initial.params, collect=collect, batches=batches, finish=finish,
      start_params=lambda i, state, frozen: initial.params,
      steps=lambda n: fine_tuning_steps(cfg.epochs, n, cfg.batch_size, cfg.max_steps))
  state, history = rounds.run_rounds(policy, cfg, optimizer_cfg, directory, round_,
                                     iterations=1, progress=progress)
  return dataclasses.replace(initial, params=state.params), history


def _run_stage(kind: str, policy, cfg: RewardModelConfig, ctx):
  cfg = dataclasses.replace(cfg, kind=kind)
  _, history = stages.run_as_stage(train_reward_model, policy, cfg, ctx,
                                   reads_reward_models=False)
  return policy, history


def run_orm_stage(policy, cfg: RewardModelConfig, ctx):
  """The "orm" stage: trains an outcome reward model on the policy's samples in the stage's
  directory; returns the policy unchanged and the reward model's history. (rerank@k with it is
  an evaluation: `EvalConfig.reward_model_stage`.)"""
  return _run_stage("outcome", policy, cfg, ctx)


def run_prm_stage(policy, cfg: RewardModelConfig, ctx):
  """The "prm" stage: trains a process reward model; returns the policy unchanged and the
  reward model's history."""
  return _run_stage("process", policy, cfg, ctx)
