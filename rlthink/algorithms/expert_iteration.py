"""Expert Iteration (Havrilla et al. 2024): sample K solutions per training question, keep the
correct ones, de-duplicate, accumulate across iterations (D_i = R_i ∪ D_{i-1}), fine-tune.

Resumable at any point: the checkpoint holds the train state (and the initial parameters when
each round restarts from them) and the JSON meta holds the iteration, the phase, the accumulated
dataset (token ids) and the metrics history.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import gin
import numpy as np

from rlthink.algorithms import core
from rlthink.policy import Policy
from rlthink.rollout import rollout_examples
from rlthink.tasks.base import Task
from rlthink.train import (Checkpointer, MetricsLogger, OptimizerConfig, create_state,
                           make_optimizer, make_train_step, run_steps, set_total_steps, sft_loss)
from rlthink.train.batching import SequenceBatcher

DEDUP_MODES = ("operations", "text", "none")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EIConfig:
  """Expert Iteration settings.

  iterations: rounds of sample -> filter -> fine-tune.
  samples_per_question: K completions per training question (the paper used 4 to 96).
  num_questions: training questions sampled per round (None: the whole split).
  dedup: "operations" (same sequence of arithmetic operations = duplicate, where the task
    provides `operations(text)`), "text" (identical completion text) or "none".
  reset_each_iteration: fine-tune from the initial model every round (the paper's choice) or
    continue from the current one.
  epochs: passes over the accumulated dataset per round (steps = ceil(epochs * |D| / batch)),
    capped by max_steps_per_iteration.
  min_reward: a finished sample (one that ended with a stop token) is kept when the verifier
    gives at least this.
  check_equations: also require every equation of the sample's thinking to be true (tasks that
    provide `equations_hold(text)`, e.g. arithmetic). The final-answer verifier accepts right
    answers reached by wrong steps ("<think>7+1=7</think>8"); a small model writes many, and
    fine-tuning on them teaches the wrong steps.
  learning_rate / warmup_steps: the fine-tuning schedule of each round (None: OptimizerConfig's);
    rounds are short, so a smaller rate than SFT's and little or no warm-up usually suit them.
  """

  iterations: int = 3
  samples_per_question: int = 4
  num_questions: int | None = None
  split: str = "train"
  temperature: float = 1.0
  max_new_tokens: int = 64
  dedup: str = "operations"
  reset_each_iteration: bool = True
  epochs: float = 2.0
  max_steps_per_iteration: int | None = None
  batch_size: int = 32
  max_length: int = 256
  min_reward: float = 1.0
  check_equations: bool = False
  learning_rate: float | None = None
  warmup_steps: int | None = None
  seed: int = 0
  sample_batch_size: int = 256
  log_every: int = 10
  checkpoint_every: int = 100

  def __post_init__(self):
    if self.dedup not in DEDUP_MODES:
      raise ValueError(f"EIConfig.dedup={self.dedup!r} is not one of {DEDUP_MODES}")
    if self.iterations < 1 or self.samples_per_question < 1 or self.epochs <= 0:
      raise ValueError(f"EIConfig: iterations and samples_per_question must be >= 1 and "
                       f"epochs > 0: {self}")


def solution_key(task: Task, example: dict, text: str, mode: str):
  """What makes two correct solutions of one question 'the same' for de-duplication."""
  if mode == "operations" and hasattr(task, "operations"):
    return (example["id"], "ops", tuple(task.operations(text)))
  if mode == "none":
    return None
  return (example["id"], "text", text)


def is_solution(task: Task, cfg: EIConfig, text: str, reward: float, stopped: bool) -> bool:
  """Whether a sampled completion is kept as a solution: verified (reward >= min_reward), finished,
  and, with `check_equations`, every equation of its thinking true."""
  # A completion cut by max_new_tokens is no solution, even when its last number happens to
  # verify; training on it would also teach the model not to stop.
  if reward < cfg.min_reward or not stopped:
    return False
  return not cfg.check_equations or task.equations_hold(text)


def _steps_for(cfg: EIConfig, size: int) -> int:
  steps = max(1, math.ceil(cfg.epochs * size / cfg.batch_size))
  return min(steps, cfg.max_steps_per_iteration or steps)


def run_expert_iteration(policy: Policy, task: Task, cfg: EIConfig,
                         optimizer_cfg: OptimizerConfig, workdir: str,
                         on_iteration: Callable[[int, Policy], dict] | None = None,
                         progress: bool = True) -> tuple[Policy, list[dict]]:
  """Runs (or resumes) Expert Iteration from `policy`; returns (final policy, per-round metrics).

  on_iteration(i, policy) -> dict of extra metrics (e.g. eval accuracy), recorded in the history.
  """
  if policy.tokenizer is None:
    raise ValueError("Expert Iteration needs a policy with a tokenizer attached")
  task.check_split(cfg.split)
  if cfg.check_equations and not hasattr(task, "equations_hold"):
    raise ValueError(f"EIConfig.check_equations=True, but task {task.name!r} has no "
                     "equations_hold(text) to check the equations of a solution with")
  for field in ("learning_rate", "warmup_steps"):
    if getattr(cfg, field) is not None:
      optimizer_cfg = dataclasses.replace(optimizer_cfg, **{field: getattr(cfg, field)})
  phase_dir = os.path.join(workdir, "ei")
  ckpt = Checkpointer(phase_dir, policy.config)
  source = task.examples(cfg.split)
  count = len(source) if cfg.num_questions is None else min(cfg.num_questions, len(source))
  questions = [source[i] for i in range(count)]
  pad_id = policy.config.pad_token_id or policy.tokenizer.pad_token_id or 0
  rounds_total = cfg.iterations

  # Everything the loop mutates, checkpointed as one (state, meta) pair. One optimizer and one
  # compiled train step serve every round: a round's length (its LR schedule's) is set in its
  # fresh state.
  optimizer = make_optimizer(optimizer_cfg, 1)
  step_fn = None
  init_params = policy.params
  meta = {"iteration": 0, "phase": "sample", "position": 0, "steps": 0, "dataset": [],
          "keys": [], "history": []}
  state = None
  tree = lambda s: {"state": s, "init": init_params} if cfg.reset_each_iteration else {"state": s}
  if ckpt.latest_step() is not None:
    like = create_state(policy.params, optimizer, cfg.seed)
    restored, meta = ckpt.restore(tree(like))
    state = restored["state"]
    init_params = restored.get("init", init_params)
  logger = MetricsLogger(phase_dir, desc="expert iteration", progress=progress)
  save_id = lambda: (ckpt.latest_step() or 0) + 1

  try:
    while meta["iteration"] < rounds_total:
      i = meta["iteration"]
      if meta["phase"] == "sample":
        params = policy.params if state is None else state.params
        current = policy.replace(params=params)
        scored = rollout_examples(current, task, questions, num_samples=cfg.samples_per_question,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
        seen = {tuple(map(_freeze, k)) for k in meta["keys"]}
        new, kept = 0, 0
        ro = scored.rollouts
        for row, reward in enumerate(scored.rewards):
          if not is_solution(task, cfg, scored.texts[row], reward, bool(ro.stopped[row])):
            continue
          kept += 1
          example = questions[row // cfg.samples_per_question]
          key = solution_key(task, example, scored.texts[row], cfg.dedup)
          frozen = None if key is None else tuple(map(_freeze, key))
          if frozen is not None and frozen in seen:
            continue
          if frozen is not None:
            seen.add(frozen)
            meta["keys"].append(_jsonable(key))
          prompt = ro.prompt_tokens[row][ro.prompt_mask[row]].tolist()
          completion = ro.completion_tokens[row][ro.completion_mask[row]].tolist()
          meta["dataset"].append([prompt, completion])
          new += 1
        solved = np.mean([any(r >= cfg.min_reward for r in rs)
                          for rs in scored.per_example(scored.rewards)])
        record = {"iteration": i + 1, "solve_rate": float(solved),
                  "sample_accuracy": float(np.mean(scored.rewards >= cfg.min_reward)),
                  "kept": kept, "new_unique": new, "dataset_size": len(meta["dataset"])}
        logger.log(i + 1, record, "ei/")
        meta["history"].append(record)
        if not meta["dataset"]:
          raise RuntimeError(
              f"Expert Iteration round {i + 1}: no correct sample among "
              f"{len(scored.rewards)}; the policy cannot solve any training question (train it "
              f"with SFT first, raise samples_per_question or temperature)")
        meta.update(phase="train", position=0, steps=_steps_for(cfg, len(meta["dataset"])))
        start_params = init_params if cfg.reset_each_iteration or state is None else state.params
        state = create_state(start_params, optimizer, cfg.seed + i)
        state = state.replace(opt_state=set_total_steps(state.opt_state, meta["steps"]))
        ckpt.save(save_id(), tree(state), meta)

      # phase == "train": fine-tune on the accumulated dataset.
      batcher = SequenceBatcher([tuple(s) for s in meta["dataset"]], cfg.batch_size,
                                cfg.max_length, pad_id, seed=cfg.seed * 7919 + i)
      if step_fn is None:
        step_fn = make_train_step(sft_loss(policy.config, policy.mesh), optimizer, state,
                                  optimizer_cfg.grad_accum_steps)

      def save(position, s):
        if position < meta["steps"]:  # the round's end is saved below, with its train loss
          ckpt.save(save_id(), tree(s), dict(meta, position=position))

      state, last = run_steps(state, step_fn, batcher, meta["position"], meta["steps"],
                              mesh=policy.mesh, logger=logger, log_every=cfg.log_every,
                              checkpoint_every=cfg.checkpoint_every, save=save,
                              global_offset=i * 1_000_000, prefix="ei/train_",
                              last_checkpoint=lambda: f"{ckpt.directory}/{ckpt.latest_step()}")
      record = meta["history"][-1]
      if meta["position"] < meta["steps"]:  # else resumed after this round's training
        record["train_loss"] = last.get("ei/train_loss")
        record["train_steps"] = meta["steps"]
        meta.update(position=meta["steps"])
        ckpt.save(save_id(), tree(state), meta)  # a kill during the evaluation keeps the round
      if on_iteration is not None:
        record.update(on_iteration(i + 1, policy.replace(params=state.params)))
      meta.update(iteration=i + 1, phase="sample", position=0)
      ckpt.save(save_id(), tree(state), meta)
  finally:
    logger.close()
  final = policy if state is None else policy.replace(params=state.params)
  return final, meta["history"]


def _freeze(x):
  return tuple(map(_freeze, x)) if isinstance(x, (list, tuple)) else x


def _jsonable(x):
  return [_jsonable(v) for v in x] if isinstance(x, (list, tuple)) else x


def run_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return run_expert_iteration(policy, task, EIConfig(), optimizer_cfg, workdir,
                              on_iteration=core.eval_callback(evaluate_fn), progress=progress)
