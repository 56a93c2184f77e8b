"""Training and loading reward models (ORM, PRM); the "orm" and "prm" experiment stages.

`train_reward_model(policy, task, cfg, optimizer_cfg, workdir)` samples solutions from `policy`,
labels them (`reward_model.outcome_rows` / `process_rows`), holds out a fraction of the questions,
trains the reward model with the shared train step and evaluates it on its training rows ("fit_*":
how well it learned them) and on the held-out questions ("holdout_*": how well it generalizes). The
checkpoints under `<workdir>/orm` (or `prm`) hold the train state; their JSON meta holds the phase,
the data position, the labelled rows and the history, so a killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import os

import gin
import jax
import numpy as np

from rlthink.algorithms import core
from rlthink.algorithms.start import stage_optimizer
from rlthink.rewards import reward_model as rm_lib
from rlthink.rewards.reward_model import RewardModel, RewardModelConfig


def holdout_split(num_questions: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train question indices, held-out question indices): a seeded permutation's tail is held out
  (at least one question when fraction > 0 and there are two or more)."""
  perm = np.random.default_rng([seed, 4099]).permutation(num_questions)
  held = int(round(fraction * num_questions))
  if fraction > 0 and num_questions >= 2:
    held = min(max(held, 1), num_questions - 1)
  return np.sort(perm[:num_questions - held]), np.sort(perm[num_questions - held:])


def _label(policy, task, cfg: RewardModelConfig, questions: list[dict]) -> tuple[list, dict]:
  from rlthink.rollout import rollout_examples
  scored = rollout_examples(policy, task, questions, num_samples=cfg.samples_per_question,
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            seed=cfg.seed * 100_003 + 17, batch_size=cfg.sample_batch_size)
  if cfg.kind == "outcome":
    rows = rm_lib.outcome_rows(scored, cfg.orm_targets)
  else:
    rows = rm_lib.process_rows(task, scored, policy.tokenizer, cfg.step_match, cfg.step_pattern)
  return rows, {"sample_accuracy": float(np.mean(scored.rewards >= 1.0))}


def _sampled_rows(policy, task, cfg: RewardModelConfig):
  """(train rows, held-out rows, stats) from samples of the configured questions."""
  source = task.examples(cfg.split)
  count = len(source) if cfg.num_questions is None else min(cfg.num_questions, len(source))
  if count < 1:
    raise ValueError(f"split {cfg.split!r} of task {task.name!r} has no examples")
  questions = [source[i] for i in range(count)]
  train_q, held_q = holdout_split(count, cfg.holdout_fraction, cfg.seed)
  rows, stats = {}, {}
  for name, indices in (("train", train_q), ("holdout", held_q)):
    chosen = [questions[int(i)] for i in indices]
    rows[name] = []
    if chosen:
      rows[name], part = _label(policy, task, cfg, chosen)
      stats[f"{name}_sample_accuracy"] = part["sample_accuracy"]
    if name == "train" and cfg.include_references:
      rows[name] += rm_lib.reference_rows(task, chosen, policy.tokenizer, cfg.kind, cfg)
  if not rows["train"]:
    raise RuntimeError(f"no {cfg.kind} reward-model training rows: the sampled completions have "
                       "no steps / tokens (raise max_new_tokens or train the policy first)")
  return rows["train"], rows["holdout"], stats


def train_reward_model(policy, task, cfg: RewardModelConfig, optimizer_cfg, workdir: str,
                       progress: bool = True) -> tuple[RewardModel, list[dict]]:
  """Trains (or resumes, or reloads when finished) a reward model; returns (model, history)."""
  from rlthink.train import (Checkpointer, MetricsLogger, create_state, make_optimizer,
                             make_train_step, run_steps)
  if policy.tokenizer is None:
    raise ValueError("reward-model training needs a policy with a tokenizer attached")
  task.check_split(cfg.split)
  optimizer_cfg = stage_optimizer(optimizer_cfg, cfg)
  name = rm_lib.STAGE_DIRS[cfg.kind]
  phase_dir = os.path.join(workdir, name)
  ckpt = Checkpointer(phase_dir, policy.config)
  initial = rm_lib.init_reward_model(policy, cfg.kind)
  pad_id = policy.config.pad_token_id or policy.tokenizer.pad_token_id or 0

  if ckpt.latest_step() is not None:
    meta = ckpt.read_meta()
    optimizer = make_optimizer(optimizer_cfg, meta["steps"])
    state, meta = ckpt.restore(create_state(initial.params, optimizer, cfg.seed))
  else:
    train_rows, held_rows, stats = _sampled_rows(policy, task, cfg)
    meta = {"phase": "train", "position": 0, "steps": rm_lib.steps_for(cfg, len(train_rows)),
            "train_rows": train_rows, "holdout_rows": held_rows,
            "history": [{"iteration": 1, "train_rows": len(train_rows),
                         "holdout_rows": len(held_rows), **stats}]}
    optimizer = make_optimizer(optimizer_cfg, meta["steps"])
    state = create_state(initial.params, optimizer, cfg.seed)
    ckpt.save(1, state, meta)
  save_id = lambda: (ckpt.latest_step() or 0) + 1

  if meta["phase"] == "train":
    rows = meta["train_rows"]
    batch_at = lambda i: rm_lib.make_batch(
        [rows[int(r)] for r in core.minibatch_rows(len(rows), cfg.batch_size, i, [cfg.seed, 7])],
        cfg.max_length, pad_id)
    step_fn = make_train_step(rm_lib.reward_model_loss(policy.config, policy.mesh), optimizer,
                              state, optimizer_cfg.grad_accum_steps)
    logger = MetricsLogger(phase_dir, total=meta["steps"], initial=meta["position"], desc=name,
                           progress=progress)
    try:
      state, last = run_steps(
          state, step_fn, batch_at, meta["position"], meta["steps"], mesh=policy.mesh,
          logger=logger, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
          save=lambda i, s: ckpt.save(save_id(), s, dict(meta, position=i)),
          last_checkpoint=lambda: f"{ckpt.directory}/{ckpt.latest_step()}", prefix=f"{name}/")
      model = dataclasses.replace(initial, params=state.params)
      record = dict(meta["history"][-1], train_loss=last.get(f"{name}/loss"),
                    train_steps=meta["steps"])
      for prefix, key in (("fit", "train_rows"), ("holdout", "holdout_rows")):
        metrics = rm_lib.evaluate_rows(model, meta[key], cfg.max_length, pad_id,
                                       cfg.score_batch_size)
        record.update({f"{prefix}_{k}": v for k, v in metrics.items()})
      logger.log(meta["steps"], {k: v for k, v in record.items()
                                 if isinstance(v, (int, float)) and v is not None}, f"{name}/")
    finally:
      logger.close()
    meta = dict(meta, phase="done", position=meta["steps"], history=[record])
    ckpt.save(save_id(), state, meta)
  return dataclasses.replace(initial, params=state.params), meta["history"]


def load_reward_model(workdir: str, kind: str, policy) -> RewardModel:
  """The finished reward model of kind "outcome"/"process" under `<workdir>/orm` (or `prm`), on
  `policy`'s devices. Raises naming the directory when it is missing or unfinished."""
  from rlthink.train import Checkpointer
  core.check_choice("kind", kind, rm_lib.KINDS)
  directory = os.path.join(workdir, rm_lib.STAGE_DIRS[kind])
  if not os.path.isdir(os.path.join(directory, "checkpoints")):
    raise FileNotFoundError(f"no {kind} reward model under {directory}: run the "
                            f"{rm_lib.STAGE_DIRS[kind]!r} stage (or train_reward_model) first")
  ckpt = Checkpointer(directory, policy.config)
  meta = ckpt.read_meta()
  if meta is None or meta.get("phase") != "done":
    raise FileNotFoundError(f"the {kind} reward model under {directory} has not finished training")
  ckpt.check_compatible(meta)
  template = rm_lib.init_reward_model(policy, kind)
  params = ckpt.restore_raw()["params"]
  shardings = jax.tree.map(lambda x: x.sharding, template.params)
  params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, shardings)
  return dataclasses.replace(template, params=params)


def _run_stage(kind: str, policy, task, optimizer_cfg, workdir, progress):
  scope = rm_lib.STAGE_DIRS[kind]
  with gin.config_scope(scope):
    cfg = dataclasses.replace(RewardModelConfig(), kind=kind)
  model, history = train_reward_model(policy, task, cfg, optimizer_cfg, workdir, progress)
  if kind == "outcome":
    from rlthink.evaluation.rerank import RerankConfig, evaluate_rerank
    with gin.config_scope(scope):
      rerank_cfg = RerankConfig()
    if rerank_cfg.enabled:
      results = evaluate_rerank(policy, task, model, rerank_cfg)
      split, metrics = next(iter(results.items()))
      history[-1].update({f"eval_{k}": v for k, v in metrics.items()
                          if isinstance(v, (int, float))})
  return history


def run_orm_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The "orm" stage: trains an outcome reward model on the policy's samples (gin scope `orm/`)
  and reports rerank@k; returns the policy unchanged and the reward model's history."""
  del evaluate_fn
  return policy, _run_stage("outcome", policy, task, optimizer_cfg, workdir, progress)


def run_prm_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The "prm" stage: trains a process reward model (gin scope `prm/`); returns the policy
  unchanged and the reward model's history."""
  del evaluate_fn
  return policy, _run_stage("process", policy, task, optimizer_cfg, workdir, progress)
