"""Return-conditioned RL (RCRL; Havrilla et al. 2024, after decision-transformer-style conditioning).

Each iteration samples K solutions per training question, labels each with its return as a token
put in front of the prompt ("<correct>" when the verifier's reward reaches `threshold`, else
"<incorrect>"), adds them to the data of earlier iterations, and fine-tunes with cross-entropy on
all of them (the completion tokens; the label and prompt are context). Sampling is conditioned on
"<correct>": the policy is asked for the kind of solution that earned a high return. The first
iteration samples without a label by default (the starting policy never saw the label tokens).

The label is part of the prompt text (`ConditionedTask`, a view of the task): before it by default
(where `rollout_examples(prompt_prefix=...)` puts it), or right after it. Sampling and training
encode the same labelled prompts, and `evaluate(policy, eval_task(task))` measures the
conditioned policy.

A round of `rlthink.algorithms.rounds`, resumable at any point: the checkpoint holds the train
state; the JSON meta holds the iteration, the phase (sample / train), the data position, the
labelled dataset (token ids) and the history. The return is the config's reward
(`reward_source`: the verifier, or an ORM's probability) against `threshold`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from rlthink import ops
from rlthink.algorithms import positions, rounds, scoring, stages
from rlthink.algorithms.config import RoundConfig
from rlthink.algorithms.rl_math import check_choice
from rlthink.models import lora
from rlthink.rewards import sources
from rlthink.rollout import rollout_examples
from rlthink.tasks.base import Task
from rlthink.tasks.pipeline import encode_prompt, encode_sft
from rlthink.train.batching import SequenceBatcher

CORRECT, INCORRECT = "<correct>", "<incorrect>"
LABEL_POSITIONS = ("start", "end")


@dataclasses.dataclass(frozen=True)
class RCRLConfig(RoundConfig):
  """RCRL settings; the sampling, reward and fine-tuning fields are `RoundConfig`'s
  (iterations: rounds of sample -> label -> fine-tune; num_questions: questions sampled per
  round, None: the whole split, walked through in a fresh order each round; samples_per_question:
  K completions per question).

  correct_label / incorrect_label: the return tokens (single tokens in the built-in tokenizer).
  label_position: "start" (before the prompt, as `rollout_examples(prompt_prefix=)`) or "end"
    (right after the prompt text, next to the completion).
  threshold: a sample is labelled correct when its reward is at least this.
  balance_labels: weight the loss so both labels carry the same total weight (`label_weights`);
    the conditional distributions learned are the same, the rare label is learned sooner.
  unconditioned_first_iteration: sample round 1 without a label (the start never saw labels).
  accumulate: train on every earlier round's samples too (else on this round's only).
  include_references: add the reference solutions, labelled correct, to round 1's data.
  The fine-tuning continues from the current policy (never restarts from the initial one).
  """

  num_questions: int | None = 256
  epochs: float = 1.0
  correct_label: str = CORRECT
  incorrect_label: str = INCORRECT
  label_position: str = "start"
  threshold: float = 1.0
  balance_labels: bool = True
  unconditioned_first_iteration: bool = True
  accumulate: bool = True
  include_references: bool = False

  def __post_init__(self):
    super().__post_init__()
    check_choice("RCRLConfig.label_position", self.label_position, LABEL_POSITIONS)
    if self.dense_reward is not None:
      raise ValueError(f"RCRLConfig.dense_reward={self.dense_reward!r}: RCRL labels each sample "
                       "correct or incorrect by its final reward; dense rewards apply to EI, "
                       "PPO, GRPO and START")
    if not self.correct_label or self.correct_label == self.incorrect_label:
      raise ValueError(f"RCRLConfig: correct_label {self.correct_label!r} and incorrect_label "
                       f"{self.incorrect_label!r} must be non-empty and different")


def check_label(tokenizer, label: str) -> list[int]:
  """The token ids of a return label; raises when the tokenizer cannot encode it."""
  ids = list(tokenizer.encode(label, add_special_tokens=False))
  if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
    raise ValueError(f"the tokenizer cannot encode the RCRL label {label!r} (got {ids}); add it "
                     "as a token or choose another RCRLConfig label")
  return ids


class ConditionedTask(Task):
  """A view of `task` whose prompts carry a return label (e.g. "<correct>"): before the prompt
  text ("start") or right after it ("end"; before the opening think marker when the prompt format
  ends the prompt with it). Everything else (data, references, verifier, helpers) is the task's.

  With "start" and the built-in tokenizer the prompt tokens are exactly those of
  `rollout_examples(prompt_prefix=label)`.
  """

  def __init__(self, task: Task, label: str = CORRECT, position: str = "start"):
    check_choice("label position", position, LABEL_POSITIONS)
    self.inner, self.label, self.position = task, label, position
    self.name, self.version, self.splits = task.name, task.version, task.splits
    self.features, self.sizes, self.Options = task.features, task.sizes, task.Options
    super().__init__(task.options, task.format, task.data_dir)

  def prompt(self, example: dict, tokenizer=None) -> str:
    text = self.inner.prompt(example, tokenizer)
    if self.position == "start":
      return self.label + text
    opener = self.format.think_open if self.format.open_thinking_in_prompt else ""
    return text[:len(text) - len(opener)] + self.label + opener

  def examples(self, split: str):
    return self.inner.examples(split)

  def generate(self, split: str):
    return self.inner.generate(split)

  def verify_answer(self, answer: str, example: dict) -> float:
    return self.inner.verify_answer(answer, example)

  def __getattr__(self, name):  # task-specific helpers (operations, answer_key, ...)
    if name == "inner":
      raise AttributeError(name)
    return getattr(self.inner, name)


def label_rollouts(task: Task, scored, tokenizer, cfg: RCRLConfig,
                   rewards: np.ndarray | None = None) -> tuple[list, int]:
  """([prompt ids with the sample's return label, completion ids, 1 if correct] per sample,
  number labelled correct) by `rewards` float[N] (default: the verifier's, `scored.rewards`).
  Prompts are encoded from the labelled task view, exactly as conditioned sampling encodes them."""
  views = {True: ConditionedTask(task, cfg.correct_label, cfg.label_position),
           False: ConditionedTask(task, cfg.incorrect_label, cfg.label_position)}
  data, num_correct = [], 0
  for row, reward in enumerate(scored.rewards if rewards is None else rewards):
    good = bool(reward >= cfg.threshold)
    num_correct += good
    data.append([encode_prompt(views[good], scored.example_of(row), tokenizer).tolist(),
                 scored.rollouts.completion(row), int(good)])
  return data, num_correct


def label_weights(labels) -> np.ndarray:
  """float32[n] per-sample loss weights that give both labels the same total weight (1 for
  every sample when one label is missing)."""
  labels = np.asarray(labels, bool)
  num_good, num_bad = int(labels.sum()), int((~labels).sum())
  if not num_good or not num_bad:
    return np.ones(labels.shape, np.float32)
  total = num_good + num_bad
  return np.where(labels, total / (2 * num_good), total / (2 * num_bad)).astype(np.float32)


def rcrl_loss(config, mesh=None):
  """Cross-entropy on the completion tokens, each sequence weighted by batch["weights"] float[B]
  (the weighted token mean; all weights 1 is `rlthink.train.sft_loss`)."""

  def loss_fn(params, batch, rng):
    del rng
    logp = scoring.forward_scores(config, params, batch["tokens"], batch["attention_mask"],
                               mesh=mesh)["logprobs"]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32) * batch["weights"][:, None]
    loss = -ops.masked_mean(logp, mask)
    return loss, {"loss": loss, "tokens": jnp.sum(batch["loss_mask"][:, 1:])}

  return loss_fn


def _reference_data(task: Task, examples, tokenizer, cfg: RCRLConfig) -> list:
  """The reference solutions of `examples`, labelled correct."""
  view = ConditionedTask(task, cfg.correct_label, cfg.label_position)
  data = []
  for example in examples:
    seq = encode_sft(view, example, tokenizer)
    data.append([seq["tokens"][~seq["loss_mask"]].tolist(),
                 seq["tokens"][seq["loss_mask"]].tolist(), 1])
  return data


def run_rcrl(policy, task: Task, cfg: RCRLConfig, optimizer_cfg, directory: str, *,
             examples: Sequence[dict] | None = None, evaluate: Callable | None = None,
             reward_models: Mapping | None = None, progress: bool = True):
  """Runs (or resumes from `directory`) return-conditioned RL; returns (policy, history).

  history: per round, reward_mean (the verifier's, on the round's samples: conditioned on the
  correct label after round 1), correct / incorrect counts, dataset_size, train_loss, and the
  evaluation. `evaluate` sees the policy itself (unconditioned prompts unless it asks for
  `eval_task(task, cfg)`). The keyword arguments are every driver's (`rlthink.algorithms.stages`).
  """
  stages.check_tokenizer(policy, "RCRL")
  policy = lora.full_finetuning(policy, optimizer_cfg.lora, "RCRL")
  tokenizer = policy.tokenizer
  check_label(tokenizer, cfg.correct_label), check_label(tokenizer, cfg.incorrect_label)
  questions = stages.training_questions(task, cfg, examples)
  count = len(questions)
  pad_id = policy.config.pad_token_id or tokenizer.pad_token_id or 0

  def collect(i, state, frozen, meta):
    params = policy.params if state is None else state.params
    conditioned = not (i == 0 and cfg.unconditioned_first_iteration)
    chosen = [questions[int(j)] for j in positions.iteration_indices(count, i, count, cfg.seed)]
    view = ConditionedTask(task, cfg.correct_label, cfg.label_position) if conditioned else task
    scored = rollout_examples(policy.replace(params=params), view, chosen,
                              num_samples=cfg.samples_per_question,
                              max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
    rewards = sources.compute_rewards(scored, task, tokenizer, reward_source=cfg.reward_source,
                                      models=frozen, batch_size=cfg.score_batch_size).final
    new, num_correct = label_rollouts(task, scored, tokenizer, cfg, rewards)
    if i == 0 and cfg.include_references:
      new += _reference_data(task, chosen, tokenizer, cfg)
    dataset = (meta["dataset"] if cfg.accumulate else []) + new
    record = {"iteration": i + 1, "samples": len(rewards), "conditioned": conditioned,
              "reward_mean": float(np.mean(scored.rewards)), "correct": num_correct,
              "incorrect": len(scored.rewards) - num_correct, "dataset_size": len(dataset)}
    return record, {"dataset": dataset}

  def batches(meta, i):
    labels = [good for _, _, good in meta["dataset"]]
    weights = label_weights(labels) if cfg.balance_labels else np.ones(len(labels), np.float32)
    return SequenceBatcher([(p, c) for p, c, _ in meta["dataset"]], cfg.batch_size,
                           cfg.max_length, pad_id, seed=cfg.seed * 7919 + i, weights=weights)

  def finish(i, state, meta, last):
    return stages.evaluation_record(evaluate, policy.replace(params=state.params), i + 1, last)

  round_ = rounds.Round(
      name="rcrl", loss_fn=rcrl_loss(policy.config, policy.mesh), template=policy.params,
      collect=collect, batches=batches, steps=cfg.steps_for, finish=finish,
      start_params=lambda i, state, frozen: policy.params if state is None else state.params)
  state, history = rounds.run_rounds(policy, cfg, optimizer_cfg, directory, round_,
                                     iterations=cfg.iterations, reward_models=reward_models,
                                     progress=progress)
  return policy.replace(params=state.params), history


def eval_task(task: Task, cfg: RCRLConfig | None = None) -> Task:
  """The task an RCRL policy is evaluated on: prompts conditioned on the correct label."""
  cfg = cfg or RCRLConfig()
  return ConditionedTask(task, cfg.correct_label, cfg.label_position)


def run_stage(policy, cfg: RCRLConfig, ctx):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return stages.run_as_stage(run_rcrl, policy, cfg, ctx)
