"""START: Separated Thinking And Response Training (Li, Pang, Yu 2026).

RL in stages that differ in which span of each sampled completion gets the policy gradient:
first the thinking span only (the response tokens are masked out of the loss), with a reward
defined on the final answer; then the response, or both jointly. `STARTConfig.schedule` lists the
stages as (span, iterations) pairs, e.g. (("thinking", 4), ("response", 2)).

Spans of a sampled completion, read from its decoded text (any tokenizer): the thinking span is
every token up to and including the token that completes the LAST closing marker ("</think>"),
the response span is every token after it (answer and eos). A completion that never closes its
thinking is all thinking (and the verifier gives it 0).

Each iteration (GRPO-style, `rlthink.algorithms.loop`): sample `samples_per_prompt` completions
of `prompts_per_iteration` questions, reward them (the verifier on the answer span, or a learned
ORM; `rlthink.rewards.sources`), take group-baselined advantages (`rl_math.group_advantages`),
optionally add per-step dense rewards as returns-to-go (step matching or a PRM), then run `epochs`
passes of the clipped policy loss (+ KL to the initial policy) over the tokens of the stage's
span. Columns outside the span are replaced by their old log-probs before the loss, so they carry
exactly zero gradient whatever values they hold. The old log-probs come from a scoring forward
before the update, or, when the iteration makes one optimizer step (`on_policy`), from the loss's
own forward under a stop-gradient (ratio exactly 1, the same gradient, one forward less).

Resumable: after each iteration the checkpoint holds the train state (params, optimizer, rng),
the reference params (when kl_coef > 0) and the frozen reward models it uses; the JSON meta holds
the iteration and the history. Data positions are pure functions of (seed, iteration).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlthink.algorithms import loop, rl_math, scoring, stages
from rlthink.algorithms.config import IterationConfig
from rlthink.rewards import dense

SPANS = ("thinking", "response", "both")
OLD_LOGPROBS = ("auto", "forward")
TRAIN_KEYS = ("tokens", "attention_mask", "train_mask", "old_logprobs", "advantages")


@dataclasses.dataclass(frozen=True)
class STARTConfig(IterationConfig):
  """START settings; the rollout, reward and schedule fields are `IterationConfig`'s.

  schedule: (span, iterations) stages in order; span is "thinking", "response" or "both".
  iterations: the schedule's total (derived, not an argument).
  samples_per_prompt: the group size.
  clip_eps (clip_eps_high): ratio clip; aggregation: see `rl_math.aggregate`.
  kl_coef, kl_estimator: KL(pi || initial policy) penalty in the loss, over the trained span.
  advantage_normalize: "std" (GRPO) or "none" (Dr. GRPO) group normalization.
  Dense rewards (`dense_reward`) are added to the advantages as returns-to-go.
  old_logprobs: "forward" (a scoring forward over the batch before the update) or "auto"
    (default): on-policy (`on_policy`), the stop-gradient of the loss's own log-probs (no scoring
    forward; the drift from the sampler's is then a train metric), else "forward".
  """

  schedule: tuple = (("thinking", 4), ("response", 2))
  iterations: int = dataclasses.field(init=False, default=0)
  prompts_per_iteration: int = 64
  samples_per_prompt: int = 4
  minibatch_size: int | None = 64
  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  advantage_normalize: str = "std"
  aggregation: str = "token_mean"
  old_logprobs: str = "auto"

  def __post_init__(self):
    schedule = tuple((str(span), int(n)) for span, n in self.schedule)
    object.__setattr__(self, "schedule", schedule)
    if not schedule:
      raise ValueError("STARTConfig.schedule is empty; e.g. (('thinking', 4), ('response', 2))")
    for span, n in schedule:
      rl_math.check_choice("STARTConfig.schedule span", span, SPANS)
      if n < 1:
        raise ValueError(f"STARTConfig.schedule: stage {span!r} has {n} iterations; need >= 1")
    object.__setattr__(self, "iterations", sum(n for _, n in schedule))
    super().__post_init__()
    rl_math.check_choice("STARTConfig.kl_estimator", self.kl_estimator, rl_math.KL_ESTIMATORS)
    rl_math.check_choice("STARTConfig.aggregation", self.aggregation, rl_math.AGGREGATIONS)
    rl_math.check_choice("STARTConfig.advantage_normalize", self.advantage_normalize,
                         rl_math.GROUP_NORMALIZATIONS)
    rl_math.check_choice("STARTConfig.old_logprobs", self.old_logprobs, OLD_LOGPROBS)
    if self.samples_per_prompt < 2:
      raise ValueError(f"STARTConfig: samples_per_prompt={self.samples_per_prompt} (a group needs "
                       ">= 2)")
    if self.clip_eps <= 0 or self.kl_coef < 0:
      raise ValueError(f"STARTConfig: clip_eps={self.clip_eps} must be > 0 and kl_coef="
                       f"{self.kl_coef} >= 0")

  @property
  def old_logprobs_in_loss(self) -> bool:
    """Whether the loss takes its old log-probs from its own forward (auto and on-policy)."""
    return self.old_logprobs == "auto" and self.on_policy

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
  rl_math.check_choice("span", span, SPANS)
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
  pg_loss, metrics = rl_math.clipped_policy_loss(
      logprobs, batch["old_logprobs"], jnp.where(mask, batch["advantages"], 0.0), mask,
      cfg.clip_eps, cfg.clip_eps_high, cfg.aggregation)
  loss, metrics = pg_loss, dict(metrics, policy_loss=pg_loss, span_tokens=jnp.sum(mask))
  if cfg.kl_coef > 0:
    ref = jnp.where(mask, batch["ref_logprobs"], jax.lax.stop_gradient(logprobs))
    kl = rl_math.aggregate(rl_math.kl_estimate(logprobs, ref, cfg.kl_estimator), mask,
                           cfg.aggregation)
    loss, metrics["kl"] = loss + cfg.kl_coef * kl, kl
  return loss, metrics


def start_loss(config, cfg: STARTConfig, mesh=None):
  """loss_fn(params, batch, rng) -> (loss, metrics) for `rlthink.train.make_train_step`.

  With `cfg.old_logprobs_in_loss` the batch's old_logprobs are the sampler's (and it holds
  completion_mask): the loss takes the stop-gradient of its own log-probs as the old ones and adds
  the drift to its metrics.
  """
  in_loss = cfg.old_logprobs_in_loss

  def loss_fn(params, batch, rng):
    del rng
    scores = scoring.forward_scores(config, params, batch["tokens"], batch["attention_mask"],
                                 mesh=mesh)
    logprobs = scores["logprobs"]
    if not in_loss:
      return start_token_loss(logprobs, batch, cfg)
    drift = scoring.logprob_drift_metrics(logprobs, batch["old_logprobs"],
                                          batch["completion_mask"])
    # On-policy, the params that sampled are these: ratio exactly 1, gradient grad log pi.
    loss, metrics = start_token_loss(
        logprobs, dict(batch, old_logprobs=jax.lax.stop_gradient(logprobs)), cfg)
    return loss, dict(metrics, **drift)

  return loss_fn


# ------------------------------------------------------------------------------------------------
# One iteration's training batch.


def iteration_batch(config, params, reference, scored, rewards, span: str, cfg: STARTConfig, *,
                    task, tokenizer, mesh=None):
  """(batch of `TRAIN_KEYS` (+ ref_logprobs) as numpy arrays, stats) for one iteration.

  rewards: the `sources.Rewards` of `scored`: final float[N] (verifier or ORM) and optional dense
  per-token rewards. Old log-probs are recomputed with a training forward (exact ratios; the drift
  from the sampler's is logged), unless the loss takes them (`cfg.old_logprobs_in_loss`: the
  batch keeps the sampler's and completion_mask, for the loss's drift metrics).
  """
  ro = scored.rollouts
  batch = ro.train_arrays()
  completion = batch["completion_mask"]
  thinking, closed = thinking_spans(tokenizer, ro, task.format)
  batch["train_mask"] = span_train_mask(ro, thinking, span)
  score = functools.partial(scoring.score_in_chunks, config, tokens=batch["tokens"],
                            attention_mask=batch["attention_mask"],
                            chunk_size=cfg.score_batch_size, mesh=mesh)
  stats = {"span": span}
  if not cfg.old_logprobs_in_loss:
    logprobs = score(params)["logprobs"]
    stats.update(scoring.logprob_drift(logprobs, batch["old_logprobs"], completion))
    batch["old_logprobs"] = logprobs
  if cfg.kl_coef > 0:
    batch["ref_logprobs"] = score(reference)["logprobs"]
  group = np.asarray(rl_math.group_advantages(rewards.final, cfg.samples_per_prompt,
                                              cfg.advantage_normalize))
  advantages = np.where(completion, group[:, None], 0.0)
  if rewards.dense is not None:
    advantages = advantages + dense.returns_to_go(rewards.dense, completion)
  batch["advantages"] = advantages.astype(np.float32)
  references = [task.steps(scored.example_of(row)) for row in range(len(scored.texts))]
  if all(r is not None for r in references):  # thinking quality, apart from the answer
    stats["thinking_accuracy"] = float(np.mean([dense.thinking_matches(t, r, task.format)
                                                for t, r in zip(scored.texts, references)]))
  lengths = np.maximum(np.asarray(ro.lengths), 1)
  stats.update(closed_rate=float(np.mean(closed)),
               thinking_fraction=float(np.mean(np.sum(thinking, 1) / lengths)),
               span_tokens_per_row=float(np.mean(np.sum(batch["train_mask"], 1))))
  keys = TRAIN_KEYS + (("ref_logprobs",) if cfg.kl_coef > 0 else ()) + (
      ("completion_mask",) if cfg.old_logprobs_in_loss else ())
  return {k: batch[k] for k in keys}, stats


# ------------------------------------------------------------------------------------------------
# The driver.


def run_start(policy, task, cfg: STARTConfig, optimizer_cfg, directory: str, *,
              examples: Sequence[dict] | None = None, evaluate: Callable | None = None,
              reward_models: Mapping | None = None, progress: bool = True):
  """Runs (or resumes from `directory`) START from `policy`; returns (policy, history).

  history: one dict per iteration (span, reward_mean from the verifier, train_reward_mean,
  closed_rate, thinking_fraction, losses...). The keyword arguments are every driver's
  (`rlthink.algorithms.stages`).
  """
  def prepare(it: loop.Iteration):
    return iteration_batch(policy.config, it.tree["state"].params, it.tree.get("reference"),
                           it.scored, it.rewards, cfg.span_at(it.index), cfg, task=task,
                           tokenizer=policy.tokenizer, mesh=policy.mesh)

  update = loop.policy_update("start", policy, cfg, optimizer_cfg,
                              start_loss(policy.config, cfg, policy.mesh), prepare)
  return loop.run_iterations(policy, task, cfg, directory, update, examples=examples,
                             evaluate=evaluate, reward_models=reward_models, progress=progress)


def run_stage(policy, cfg: STARTConfig, ctx):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return stages.run_as_stage(run_start, policy, cfg, ctx)
