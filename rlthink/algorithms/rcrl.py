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

Resumable at any point: the checkpoint holds the train state; the JSON meta holds the iteration,
the phase (sample / train), the data position, the labelled dataset (token ids) and the history.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import gin
import jax.numpy as jnp
import numpy as np

from rlthink import ops
from rlthink.algorithms import core
from rlthink.algorithms.start import stage_optimizer
from rlthink.tasks.base import Task

CORRECT, INCORRECT = "<correct>", "<incorrect>"
LABEL_POSITIONS = ("start", "end")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RCRLConfig:
  """RCRL settings.

  iterations: rounds of sample -> label -> fine-tune.
  num_questions: questions sampled per round (None: the whole split), walking through the split.
  samples_per_question: K completions per question.
  correct_label / incorrect_label: the return tokens (single tokens in the built-in tokenizer).
  label_position: "start" (before the prompt, as `rollout_examples(prompt_prefix=)`) or "end"
    (right after the prompt text, next to the completion).
  threshold: a sample is labelled correct when its reward is at least this.
  balance_labels: weight the loss so both labels carry the same total weight (`label_weights`);
    the conditional distributions learned are the same, the rare label is learned sooner.
  unconditioned_first_iteration: sample round 1 without a label (the start never saw labels).
  accumulate: train on every earlier round's samples too (else on this round's only).
  include_references: add the reference solutions, labelled correct, to round 1's data.
  epochs, max_steps_per_iteration: steps = ceil(epochs * |data| / batch_size), capped.
  learning_rate / warmup_steps: this stage's schedule (None: the experiment's OptimizerConfig).
  The fine-tuning continues from the current policy (never restarts from the initial one).
  """

  iterations: int = 3
  num_questions: int | None = 256
  samples_per_question: int = 4
  split: str = "train"
  temperature: float = 1.0
  max_new_tokens: int = 64
  correct_label: str = CORRECT
  incorrect_label: str = INCORRECT
  label_position: str = "start"
  threshold: float = 1.0
  balance_labels: bool = True
  unconditioned_first_iteration: bool = True
  accumulate: bool = True
  include_references: bool = False
  epochs: float = 1.0
  max_steps_per_iteration: int | None = None
  learning_rate: float | None = None
  warmup_steps: int | None = None
  batch_size: int = 32
  max_length: int = 256
  seed: int = 0
  sample_batch_size: int = 256
  log_every: int = 10
  checkpoint_every: int = 100

  def __post_init__(self):
    if self.iterations < 1 or self.samples_per_question < 1 or self.epochs <= 0 or (
        self.batch_size < 1 or (self.num_questions is not None and self.num_questions < 1)):
      raise ValueError(f"RCRLConfig: iterations, samples_per_question, batch_size, num_questions "
                       f">= 1 and epochs > 0 needed: {self}")
    core.check_choice("RCRLConfig.label_position", self.label_position, LABEL_POSITIONS)
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
    core.check_choice("label position", position, LABEL_POSITIONS)
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


def label_rollouts(task: Task, scored, tokenizer, cfg: RCRLConfig) -> tuple[list, int]:
  """([prompt ids with the sample's return label, completion ids] per sample, number labelled
  correct). Prompts are encoded from the labelled task view, exactly as conditioned sampling
  encodes them."""
  from rlthink.tasks.pipeline import encode_prompt
  views = {True: ConditionedTask(task, cfg.correct_label, cfg.label_position),
           False: ConditionedTask(task, cfg.incorrect_label, cfg.label_position)}
  data, num_correct = [], 0
  for row, reward in enumerate(scored.rewards):
    good = bool(reward >= cfg.threshold)
    num_correct += good
    example = scored.examples[row // scored.num_samples]
    data.append([encode_prompt(views[good], example, tokenizer).tolist(),
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
    logp = core.forward_scores(config, params, batch["tokens"], batch["attention_mask"],
                               mesh=mesh)["logprobs"]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32) * batch["weights"][:, None]
    loss = -ops.masked_mean(logp, mask)
    return loss, {"loss": loss, "tokens": jnp.sum(batch["loss_mask"][:, 1:])}

  return loss_fn


def _steps_for(cfg: RCRLConfig, size: int) -> int:
  steps = max(1, math.ceil(cfg.epochs * size / cfg.batch_size))
  return min(steps, cfg.max_steps_per_iteration or steps)


def _reference_data(task: Task, examples, tokenizer, cfg: RCRLConfig) -> list:
  """The reference solutions of `examples`, labelled correct."""
  from rlthink.tasks.pipeline import encode_sft
  view = ConditionedTask(task, cfg.correct_label, cfg.label_position)
  data = []
  for example in examples:
    seq = encode_sft(view, example, tokenizer)
    data.append([seq["tokens"][~seq["loss_mask"]].tolist(),
                 seq["tokens"][seq["loss_mask"]].tolist(), 1])
  return data


def run_rcrl(policy, task: Task, cfg: RCRLConfig, optimizer_cfg, workdir: str,
             on_iteration: Callable[[int, object], dict] | None = None,
             progress: bool = True):
  """Runs (or resumes from `<workdir>/rcrl`) return-conditioned RL; returns (policy, history).

  history: per round, reward_mean (the round's samples: conditioned on the correct label after
  round 1), correct / incorrect counts, dataset_size, train_loss, and on_iteration's metrics.
  """
  from rlthink.rollout import rollout_examples
  from rlthink.train import (Checkpointer, MetricsLogger, create_state, make_optimizer,
                             make_train_step, run_steps, set_total_steps)
  from rlthink.train.batching import SequenceBatcher

  tokenizer = policy.tokenizer
  if tokenizer is None:
    raise ValueError("RCRL needs a policy with a tokenizer attached")
  task.check_split(cfg.split)
  optimizer_cfg = stage_optimizer(optimizer_cfg, cfg)
  check_label(tokenizer, cfg.correct_label), check_label(tokenizer, cfg.incorrect_label)
  questions = task.examples(cfg.split)
  count = len(questions) if cfg.num_questions is None else min(cfg.num_questions, len(questions))
  phase_dir = os.path.join(workdir, "rcrl")
  ckpt = Checkpointer(phase_dir, policy.config)
  pad_id = policy.config.pad_token_id or tokenizer.pad_token_id or 0

  meta = {"iteration": 0, "phase": "sample", "position": 0, "steps": 0, "dataset": [],
          "history": []}
  # One optimizer and one compiled train step for every round (a round's length is set in its
  # fresh state).
  state = step_fn = None
  optimizer = make_optimizer(optimizer_cfg, 1)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(create_state(policy.params, optimizer, cfg.seed))
  logger = MetricsLogger(phase_dir, desc="rcrl", progress=progress)
  save_id = lambda: (ckpt.latest_step() or 0) + 1
  try:
    while meta["iteration"] < cfg.iterations:
      i = meta["iteration"]
      if meta["phase"] == "sample":
        params = policy.params if state is None else state.params
        conditioned = not (i == 0 and cfg.unconditioned_first_iteration)
        examples = [questions[int(j)] for j in core.iteration_indices(count, i, count, cfg.seed)]
        view = ConditionedTask(task, cfg.correct_label, cfg.label_position) if conditioned else task
        scored = rollout_examples(policy.replace(params=params), view, examples,
                                  num_samples=cfg.samples_per_question,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
        new, num_correct = label_rollouts(task, scored, tokenizer, cfg)
        if i == 0 and cfg.include_references:
          new += _reference_data(task, examples, tokenizer, cfg)
        dataset = (meta["dataset"] if cfg.accumulate else []) + new
        record = {"iteration": i + 1, "conditioned": conditioned,
                  "reward_mean": float(np.mean(scored.rewards)), "correct": num_correct,
                  "incorrect": len(scored.rewards) - num_correct, "dataset_size": len(dataset)}
        logger.log(i + 1, {k: float(v) for k, v in record.items()}, "rcrl/")
        steps = _steps_for(cfg, len(dataset))
        state = create_state(params, optimizer, cfg.seed + i)
        state = state.replace(opt_state=set_total_steps(state.opt_state, steps))
        meta = dict(meta, phase="train", position=0, steps=steps, dataset=dataset,
                    history=meta["history"] + [record])
        ckpt.save(save_id(), state, meta)

      # phase == "train": cross-entropy on every labelled sample.
      labels = [good for _, _, good in meta["dataset"]]
      weights = label_weights(labels) if cfg.balance_labels else np.ones(len(labels), np.float32)
      batcher = SequenceBatcher([(p, c) for p, c, _ in meta["dataset"]], cfg.batch_size,
                                cfg.max_length, pad_id, seed=cfg.seed * 7919 + i, weights=weights)
      if step_fn is None:
        step_fn = make_train_step(rcrl_loss(policy.config, policy.mesh), optimizer, state,
                                  optimizer_cfg.grad_accum_steps)
      state, last = run_steps(state, step_fn, batcher, meta["position"], meta["steps"],
                              mesh=policy.mesh, logger=logger, log_every=cfg.log_every,
                              checkpoint_every=cfg.checkpoint_every,
                              save=lambda p, s: ckpt.save(save_id(), s, dict(meta, position=p)),
                              global_offset=i * 1_000_000, prefix="rcrl/train_",
                              last_checkpoint=lambda: f"{ckpt.directory}/{ckpt.latest_step()}")
      record = dict(meta["history"][-1], train_loss=last.get("rcrl/train_loss"),
                    train_steps=meta["steps"])
      if on_iteration is not None:
        record.update(on_iteration(i + 1, policy.replace(params=state.params)))
      meta = dict(meta, iteration=i + 1, phase="sample", position=0,
                  history=meta["history"][:-1] + [record])
      ckpt.save(save_id(), state, meta)
  finally:
    logger.close()
  return (policy if state is None else policy.replace(params=state.params)), meta["history"]


def eval_task(task: Task, cfg: RCRLConfig | None = None) -> Task:
  """The task an RCRL policy is evaluated on: prompts conditioned on the correct label."""
  cfg = cfg or RCRLConfig()
  return ConditionedTask(task, cfg.correct_label, cfg.label_position)


def run_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The experiment-stage entry point (see `rlthink.algorithms`). `evaluate_fn` sees the policy
  itself (unconditioned prompts); `eval_task(task)` gives the conditioned view."""
  return run_rcrl(policy, task, RCRLConfig(), optimizer_cfg, workdir,
                  on_iteration=core.eval_callback(evaluate_fn), progress=progress)
