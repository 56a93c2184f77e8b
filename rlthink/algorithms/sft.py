"""Supervised fine-tuning on a task's reference solutions (prompt tokens masked from the loss)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from rlthink.algorithms import stages
from rlthink.models import lora
from rlthink.policy import Policy
from rlthink.tasks.base import Task
from rlthink.tasks.pipeline import sft_dataset
from rlthink.train import (Checkpointer, MetricsLogger, OptimizerConfig, create_state,
                           make_optimizer, make_train_step, run_steps, sft_loss)
from rlthink.train.optim import learning_rate_of

_BATCH_KEYS = ("tokens", "loss_mask", "attention_mask", "segment_ids", "positions")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """steps: optimizer steps; packing: first-fit pack several examples per row (segment-masked);
  num_examples: train on the first this many examples of the split (None: all of it)."""

  steps: int = 300
  batch_size: int = 32
  max_length: int = 128
  packing: bool = False
  split: str = "train"
  num_examples: int | None = None
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 100

  def __post_init__(self):
    if self.steps < 1 or self.batch_size < 1 or self.max_length < 2:
      raise ValueError(f"SFTConfig: steps, batch_size must be >= 1 and max_length >= 2: {self}")


def run_sft(policy: Policy, task: Task, cfg: SFTConfig, optimizer_cfg: OptimizerConfig,
            directory: str, *, examples: Sequence[dict] | None = None,
            evaluate: Callable | None = None, reward_models: Mapping | None = None,
            progress: bool = True) -> tuple[Policy, list[dict]]:
  """Fine-tunes `policy` on the reference completions of `examples` (default: `cfg.split` of
  `task`); resumes from `directory`. Returns (policy with the trained parameters, history: one
  record with the evaluation after training). The keyword arguments are every driver's
  (`rlthink.algorithms.stages`); `reward_models` is unused. Re-running a finished run restores
  its result. With `optimizer_cfg.lora`, only LoRA adapters train (the checkpoints hold them
  alone) and the returned policy carries them beside the frozen weights (`rlthink.models.lora`).
  """
  del reward_models
  stages.check_tokenizer(policy, "SFT")
  if examples is None:
    task.check_split(cfg.split)
    examples = task.examples(cfg.split)
  ckpt = Checkpointer(directory, policy.config)
  optimizer = make_optimizer(optimizer_cfg, cfg.steps)
  trainable = lora.trainable(policy, optimizer_cfg.lora)
  state = create_state(trainable.params, optimizer, cfg.seed)
  if cfg.num_examples is not None:
    if not 0 < cfg.num_examples <= len(examples):
      raise ValueError(f"SFTConfig.num_examples={cfg.num_examples} must be in [1, {len(examples)}] "
                       f"(the size of split {cfg.split!r})")
    examples = [examples[i] for i in range(cfg.num_examples)]
  data = iter(sft_dataset(task, cfg.split, policy.tokenizer, batch_size=cfg.batch_size,
                          max_length=cfg.max_length, packing=cfg.packing, seed=cfg.seed,
                          num_epochs=None, examples=examples))
  start = 0
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    start = meta["position"]
    data.set_state(meta["data_state"])
  done = lambda: _finished(policy.replace(params=trainable.policy_params(state.params)), cfg,
                           evaluate)
  if start >= cfg.steps:
    return done()

  step_fn = make_train_step(trainable.loss(sft_loss(policy.config, policy.mesh)), optimizer,
                            state, optimizer_cfg.grad_accum_steps, frozen=trainable.base)
  logger = MetricsLogger(directory, total=cfg.steps, initial=start, desc="sft",
                         progress=progress)

  def batch_at(i):  # called once per step, in order: the iterator position is the step
    batch = next(data)
    return {k: batch[k] for k in _BATCH_KEYS if k in batch}

  def save(i, s):
    ckpt.save(i, s, {"position": i, "data_state": data.get_state()})

  try:
    state, _ = run_steps(state, step_fn, batch_at, start, cfg.steps, mesh=policy.mesh,
                         logger=logger, log_every=cfg.log_every,
                         checkpoint_every=cfg.checkpoint_every, save=save,
                         checkpointer=ckpt, learning_rate=learning_rate_of(optimizer_cfg),
                         prefix="sft/")
  finally:
    logger.close()
  return done()


def _finished(trained: Policy, cfg: SFTConfig, evaluate) -> tuple[Policy, list[dict]]:
  record = {"iteration": 1, "train_steps": cfg.steps}
  return trained, [dict(record, **stages.evaluation_record(evaluate, trained, 1, True))]


def run_stage(policy, cfg: SFTConfig, ctx):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return stages.run_as_stage(run_sft, policy, cfg, ctx, reads_reward_models=False)
