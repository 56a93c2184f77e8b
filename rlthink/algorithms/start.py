"""START: Separated Thinking And Response Training (Li, Pang, Yu 2026).

RL in stages that differ in which span of each sampled completion gets the policy gradient:
first the thinking span only (the response tokens are masked out of the loss), with a reward
defined on the final answer; then the response, or both jointly. `STARTConfig.schedule` lists the
stages as (span, iterations) pairs, e.g. (("thinking", 4), ("response", 2)).

Spans of a sampled completion, read from its decoded text (any tokenizer): the thinking span is
every token up to and including the token that completes the LAST closing marker ("</think>"),
the response span is every token after it (answer and eos). A completion that never closes its
thinking is all thinking (and the verifier gives it 0).

Each iteration (GRPO-style): sample `samples_per_prompt` completions of `prompts_per_iteration`
questions, reward them (the verifier on the answer span, or a learned ORM), take group-baselined
advantages (`core.group_advantages`), optionally add per-step dense rewards as returns-to-go
(step matching or a PRM, `rlthink.rewards.dense`), then run `epochs` passes of the clipped policy
loss (+ KL to the initial policy) over the tokens of the stage's span. Columns outside the span
are replaced by their old log-probs before the loss, so they carry exactly zero gradient whatever
values they hold.

Resumable: after each iteration the checkpoint holds the train state (params, optimizer, rng),
the reference params (when kl_coef > 0) and the frozen reward models it uses; the JSON meta holds
the iteration and the history. Data positions are pure functions of (seed, iteration).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import gin
import jax
import jax.numpy as jnp
import numpy as np

from rlthink.algorithms import core
from rlthink.rewards import dense

SPANS = ("thinking", "response", "both")
REWARD_SOURCES = ("verifier", "orm")
DENSE_REWARDS = ("none", "steps", "prm")
TRAIN_KEYS = ("tokens", "attention_mask", "train_mask", "old_logprobs", "advantages")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class STARTConfig:
  """START settings.

  schedule: (span, iterations) stages in order; span is "thinking", "response" or "both".
  prompts_per_iteration, samples_per_prompt: questions per iteration and the group size.
  num_questions: train on the first this many questions of `split` (None: all of them).
  epochs, minibatch_size: passes over the iteration's rows and rows per optimizer step.
  clip_eps (clip_eps_high): ratio clip; aggregation: see `core.aggregate`.
  kl_coef, kl_estimator: KL(pi || initial policy) penalty in the loss, over the trained span.
  advantage_normalize: "std" (GRPO) or "none" (Dr. GRPO) group normalization.
  reward_source: "verifier" (the task's answer check) or "orm" (probability from the outcome
    reward model under `<reward_model_dir or workdir>/orm`).
  dense_reward: "none", "steps" (reference-step matching) or "prm" (process reward model under
    `<reward_model_dir or workdir>/prm`), added as returns-to-go scaled by dense_coef.
  learning_rate / warmup_steps: this stage's schedule (None: the experiment's OptimizerConfig).
  """

  schedule: tuple = (("thinking", 4), ("response", 2))
  prompts_per_iteration: int = 64
  samples_per_prompt: int = 4
  num_questions: int | None = None
  split: str = "train"
  temperature: float = 1.0
  max_new_tokens: int = 64
  epochs: int = 1
  minibatch_size: int = 64
  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  advantage_normalize: str = "std"
  aggregation: str = "token_mean"
  reward_source: str = "verifier"
  dense_reward: str = "none"
  dense_coef: float = 0.5
  reward_model_dir: str | None = None
  learning_rate: float | None = None
  warmup_steps: int | None = None
  score_batch_size: int = 64
  sample_batch_size: int = 256
  seed: int = 0
  log_every: int = 10

  def __post_init__(self):
    schedule = tuple((str(span), int(n)) for span, n in self.schedule)
    object.__setattr__(self, "schedule", schedule)
    for span, n in schedule:
      core.check_choice("STARTConfig.schedule span", span, SPANS)
      if n < 1:
        raise ValueError(f"STARTConfig.schedule: stage {span!r} has {n} iterations; need >= 1")
    if not schedule:
      raise ValueError("STARTConfig.schedule is empty; e.g. (('thinking', 4), ('response', 2))")
    core.check_choice("STARTConfig.reward_source", self.reward_source, REWARD_SOURCES)
    core.check_choice("STARTConfig.dense_reward", self.dense_reward, DENSE_REWARDS)
    core.check_choice("STARTConfig.kl_estimator", self.kl_estimator, core.KL_ESTIMATORS)
    core.check_choice("STARTConfig.aggregation", self.aggregation, core.AGGREGATIONS)
    core.check_choice("STARTConfig.advantage_normalize", self.advantage_normalize,
                      core.GROUP_NORMALIZATIONS)
    counts = ("prompts_per_iteration", "samples_per_prompt", "epochs", "minibatch_size",
              "max_new_tokens", "score_batch_size", "sample_batch_size")
    bad = [f"{k}={getattr(self, k)}" for k in counts if getattr(self, k) < 1]
    if self.samples_per_prompt < 2:
      bad.append(f"samples_per_prompt={self.samples_per_prompt} (a group needs >= 2)")
    if bad or self.clip_eps <= 0 or self.kl_coef < 0:
      raise ValueError(f"STARTConfig: {', '.join(bad) or 'a value'} out of range (counts >= 1, "
                       f"clip_eps > 0, kl_coef >= 0): {self}")

  @property
  def iterations(self) -> int:
    return sum(n for _, n in self.schedule)

  def span_at(self, iteration: int) -> str:
    """The span trained at 0-based `iteration`."""
    for span, n in self.schedule:
      if iteration < n:
        return span
      iteration -= n
    raise IndexError(f"iteration beyond the schedule's {self.iterations}")


# ------------------------------------------------------------------------------------------------
# Spans and the loss: pure functions.


def thinking_spans(tokenizer, rollouts, fmt) -> tuple[np.ndarray, np.ndarray]:
  """(thinking bool[N, C], closed bool[N]) over the completion tokens (see the module doc);
  the response span is `rollouts.completion_mask & ~thinking`."""
  n, c = rollouts.completion_tokens.shape
  thinking, closed = np.zeros((n, c), bool), np.zeros((n,), bool)
  for row in range(n):
    ids = rollouts.completion(row)
    if not ids:
      continue
    text = tokenizer.decode(ids, skip_special_tokens=True)
    close = text.rfind(fmt.think_close)
    if close < 0:
      thinking[row, :len(ids)] = True
      continue
    ends = dense.token_char_ends(tokenizer, ids)
    thinking[row, :dense.token_at_char(ends, close + len(fmt.think_close)) + 1] = True
    closed[row] = True
  return thinking, closed


def span_train_mask(rollouts, thinking: np.ndarray, span: str) -> np.ndarray:
  """bool[N, P + C - 1] in the token frame: the sampled tokens of `span` (completion token j is
  column P - 1 + j)."""
  core.check_choice("span", span, SPANS)
  completion = np.asarray(rollouts.completion_mask, bool)
  chosen = {"thinking": completion & thinking, "response": completion & ~thinking,
            "both": completion}[span]
  n, p = rollouts.prompt_tokens.shape
  return np.concatenate([np.zeros((n, p - 1), bool), chosen], axis=1)


def start_token_loss(logprobs: jax.Array, batch: dict, cfg: STARTConfig) -> tuple[jax.Array, dict]:
  """The START objective from per-token log-probs float[B, T-1] (with gradient).

  batch: train_mask bool[B, T-1] (the stage's span), old_logprobs, advantages float[B, T-1],
  ref_logprobs when kl_coef > 0. Outside train_mask the log-probs are replaced by the old ones
  (ratio 1, KL 0, gradient exactly 0), so those columns cannot move the parameters.
  """
  mask = batch["train_mask"].astype(bool)
  logprobs = jnp.where(mask, logprobs, jax.lax.stop_gradient(batch["old_logprobs"]))
  pg_loss, metrics = core.clipped_policy_loss(
      logprobs, batch["old_logprobs"], jnp.where(mask, batch["advantages"], 0.0), mask,
      cfg.clip_eps, cfg.clip_eps_high, cfg.aggregation)
  loss, metrics = pg_loss, dict(metrics, policy_loss=pg_loss, span_tokens=jnp.sum(mask))
  if cfg.kl_coef > 0:
    ref = jnp.where(mask, batch["ref_logprobs"], jax.lax.stop_gradient(logprobs))
    kl = core.aggregate(core.kl_estimate(logprobs, ref, cfg.kl_estimator), mask, cfg.aggregation)
    loss, metrics["kl"] = loss + cfg.kl_coef * kl, kl
  return loss, metrics


def start_loss(config, cfg: STARTConfig, mesh=None):
  """loss_fn(params, batch, rng) -> (loss, metrics) for `rlthink.train.make_train_step`."""

  def loss_fn(params, batch, rng):
    del rng
    scores = core.forward_scores(config, params, batch["tokens"], batch["attention_mask"],
                                 mesh=mesh)
    return start_token_loss(scores["logprobs"], batch, cfg)

  return loss_fn


# ------------------------------------------------------------------------------------------------
# One iteration's training batch.


def iteration_batch(config, params, reference, scored, rewards: np.ndarray, span: str,
                    cfg: STARTConfig, *, task, tokenizer, prm=None, mesh=None):
  """(batch of `TRAIN_KEYS` (+ ref_logprobs) as numpy arrays, stats) for one iteration.

  rewards: float[N] training rewards of `scored` (verifier or ORM). Old log-probs are recomputed
  with a training forward (exact ratios; the drift from the sampler's is logged).
  """
  ro = scored.rollouts
  batch = core.rollout_batch(ro)
  completion = batch["completion_mask"]
  thinking, closed = thinking_spans(tokenizer, ro, task.format)
  batch["train_mask"] = span_train_mask(ro, thinking, span)
  score = functools.partial(core.score_in_chunks, config, tokens=batch["tokens"],
                            attention_mask=batch["attention_mask"],
                            chunk_size=cfg.score_batch_size, mesh=mesh)
  logprobs = score(params)["logprobs"]
  stats = core.logprob_drift(logprobs, batch["old_logprobs"], completion)
  batch["old_logprobs"] = logprobs
  if cfg.kl_coef > 0:
    batch["ref_logprobs"] = score(reference)["logprobs"]
  group = np.asarray(core.group_advantages(rewards, cfg.samples_per_prompt,
                                           cfg.advantage_normalize))
  advantages = np.where(completion, group[:, None], 0.0)
  if cfg.dense_reward != "none":
    if cfg.dense_reward == "steps":
      step_rewards = dense.step_match_rewards(task, scored, tokenizer, cfg.dense_coef)
    else:
      step_rewards = dense.prm_rewards(prm, task, scored, tokenizer, cfg.dense_coef,
                                       batch_size=cfg.score_batch_size)
    advantages = advantages + dense.returns_to_go(step_rewards, completion)
    stats["dense_reward_mean"] = float(np.mean(np.sum(step_rewards, axis=1)))
  batch["advantages"] = advantages.astype(np.float32)
  references = [task.steps(scored.examples[row // scored.num_samples])
                for row in range(len(scored.texts))]
  if all(r is not None for r in references):  # thinking quality, apart from the answer
    stats["thinking_accuracy"] = float(np.mean([dense.thinking_matches(t, r, task.format)
                                                for t, r in zip(scored.texts, references)]))
  lengths = np.maximum(np.asarray(ro.lengths), 1)
  stats.update(closed_rate=float(np.mean(closed)),
               thinking_fraction=float(np.mean(np.sum(thinking, 1) / lengths)),
               span_tokens_per_row=float(np.mean(np.sum(batch["train_mask"], 1))))
  keys = TRAIN_KEYS + (("ref_logprobs",) if cfg.kl_coef > 0 else ())
  return {k: batch[k] for k in keys}, stats


def stage_optimizer(optimizer_cfg, cfg):
  """`optimizer_cfg` with the stage config's learning_rate / warmup_steps where they are set."""
  changes = {k: getattr(cfg, k) for k in ("learning_rate", "warmup_steps")
             if getattr(cfg, k, None) is not None}
  return dataclasses.replace(optimizer_cfg, **changes) if changes else optimizer_cfg


def _reward_models(cfg: STARTConfig, workdir: str, policy, resumed: bool) -> dict:
  """{"orm"/"prm": RewardModel} the run uses: loaded from `<reward_model_dir or workdir>` on a
  fresh run; zero-head templates when resuming (the checkpoint holds their params)."""
  from rlthink.rewards.reward_model import init_reward_model
  from rlthink.rewards.training import load_reward_model
  kinds = {"orm": "outcome"} if cfg.reward_source == "orm" else {}
  if cfg.dense_reward == "prm":
    kinds["prm"] = "process"
  if resumed:
    return {name: init_reward_model(policy, kind) for name, kind in kinds.items()}
  directory = cfg.reward_model_dir or workdir
  return {name: load_reward_model(directory, kind, policy) for name, kind in kinds.items()}


# ------------------------------------------------------------------------------------------------
# The driver.


def run_start(policy, task, cfg: STARTConfig, optimizer_cfg, workdir: str,
              on_iteration: Callable[[int, object], dict] | None = None,
              progress: bool = True):
  """Runs (or resumes from `<workdir>/start`) START from `policy`; returns (policy, history).

  history: one dict per iteration (span, reward_mean from the verifier, train_reward_mean,
  closed_rate, thinking_fraction, losses...). on_iteration(i, policy) -> extra metrics.
  """
  from rlthink.rollout import rollout_examples
  from rlthink.rewards.reward_model import score_rollouts
  from rlthink.train import (Checkpointer, MetricsLogger, create_state, make_optimizer,
                             make_train_step, run_steps)

  if policy.tokenizer is None:
    raise ValueError("START needs a policy with a tokenizer attached")
  task.check_split(cfg.split)
  optimizer_cfg = stage_optimizer(optimizer_cfg, cfg)
  questions = task.examples(cfg.split)
  if cfg.num_questions is not None:
    questions = [questions[i] for i in range(min(cfg.num_questions, len(questions)))]
  phase_dir = os.path.join(workdir, "start")
  ckpt = Checkpointer(phase_dir, policy.config)
  rows = cfg.prompts_per_iteration * cfg.samples_per_prompt
  per_iteration = cfg.epochs * -(-rows // cfg.minibatch_size)
  optimizer = make_optimizer(optimizer_cfg, cfg.iterations * per_iteration)
  tree = {"state": create_state(policy.params, optimizer, cfg.seed)}
  if cfg.kl_coef > 0:
    tree["reference"] = core.frozen_reference(policy.params, policy.config)
  meta = {"iteration": 0, "history": []}
  resumed = ckpt.latest_step() is not None
  models = _reward_models(cfg, workdir, policy, resumed)
  tree.update({name: m.params for name, m in models.items()})
  if resumed:  # the reward models come back from the checkpoint: frozen with the run
    tree, meta = ckpt.restore(tree)
  models = {name: dataclasses.replace(m, params=tree[name]) for name, m in models.items()}
  step_fn = make_train_step(start_loss(policy.config, cfg, policy.mesh), optimizer, tree["state"],
                            optimizer_cfg.grad_accum_steps)
  logger = MetricsLogger(phase_dir, total=cfg.iterations * per_iteration,
                         initial=meta["iteration"] * per_iteration, desc="start",
                         progress=progress)
  try:
    while meta["iteration"] < cfg.iterations:
      i = meta["iteration"]
      span, state = cfg.span_at(i), tree["state"]
      current = policy.replace(params=state.params)
      examples = [questions[int(j)] for j in core.iteration_indices(
          len(questions), i, cfg.prompts_per_iteration, cfg.seed)]
      scored = rollout_examples(current, task, examples, num_samples=cfg.samples_per_prompt,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
      rewards = scored.rewards
      if "orm" in models:
        rewards = score_rollouts(models["orm"], scored.rollouts, cfg.score_batch_size)
      batch, stats = iteration_batch(policy.config, state.params, tree.get("reference"), scored,
                                     rewards, span, cfg, task=task, tokenizer=policy.tokenizer,
                                     prm=models.get("prm"), mesh=policy.mesh)
      batch_at = lambda s: {k: v[core.minibatch_rows(rows, cfg.minibatch_size, s, [cfg.seed, i])]
                            for k, v in batch.items()}
      state, last = run_steps(state, step_fn, batch_at, 0, per_iteration, mesh=policy.mesh,
                              logger=logger, log_every=cfg.log_every,
                              global_offset=i * per_iteration, prefix="start/train_")
      record = {"iteration": i + 1, "span": span,
                "reward_mean": float(np.mean(scored.rewards)),
                "train_reward_mean": float(np.mean(rewards)),
                "completion_length": float(np.mean(scored.rollouts.lengths)), **stats,
                **{k.removeprefix("start/train_"): v for k, v in last.items()}}
      tree = dict(tree, state=state)
      meta = core.end_iteration(i, record, tree, meta, current=policy.replace(params=state.params),
                                on_iteration=on_iteration, logger=logger, ckpt=ckpt,
                                prefix="start/")
  finally:
    logger.close()
  return policy.replace(params=tree["state"].params), meta["history"]


def run_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return run_start(policy, task, STARTConfig(), optimizer_cfg, workdir,
                   on_iteration=core.eval_callback(evaluate_fn), progress=progress)
