"""PPO with a value model (Havrilla et al. 2024, after Ziegler et al. 2019 / Ouyang et al. 2022).

Each iteration: sample completions of a batch of training questions with the current policy,
score them with the task's verifier, build per-token rewards (the sparse final reward on the last
token, minus kl_coef * KL to the frozen reference policy on every token), estimate advantages with
GAE on the value model's values, then run `epochs` passes of clipped-policy + clipped-value
(+ entropy) minibatch updates. The KL coefficient is fixed or adaptive (`kl_target`).

The value model is either a separate copy of the initial policy with a value head
(`value_model="separate"`, its own learning rate) or the policy's own trunk with a value head
(`value_model="shared"`). The value head starts at zero (V = 0).

The rollout's log-probs (from the sampler's cached decode) are checked against a forward pass of
the same params every iteration; the drift is logged (`logprob_drift_mean/max`).

Resumable: the checkpoint after each iteration holds the train state (policy, value, both
optimizer states, rng), the reference params and the KL controller; the JSON meta holds the
iteration and the history. Data positions are pure functions of (seed, iteration), so a resumed run
is exactly the uninterrupted one.

This module imports only JAX-side code at the top, so the benchmark (`rlthink.bench.ppo`) runs on
images without gin, grain or tensorboardX; the driver imports that machinery when it runs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlthink import ops
from rlthink.algorithms import core
from rlthink.models import decoder

try:  # gin binds PPOConfig in experiments; the accelerator image (benchmarks) has no gin.
  import gin
  _configurable = gin.configurable
except ModuleNotFoundError:
  _configurable = lambda cls: cls

VALUE_MODELS = ("separate", "shared")
OLD_LOGPROBS = ("forward", "rollout")
VALUE_HEAD = ("value_head", "value_bias")
TRAIN_KEYS = ("tokens", "attention_mask", "completion_mask", "old_logprobs", "old_values",
              "advantages", "returns")


@_configurable
@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """PPO settings.

  iterations: rounds of sample -> score -> advantages -> update.
  num_questions: the first this many questions of `split` form the training pool (None: all);
    each iteration takes the next `prompts_per_iteration` of a per-pass permutation of the pool.
  prompts_per_iteration / samples_per_prompt: the rollout batch is their product (rows).
  epochs, minibatch_size: passes over the rollout batch and rows per optimizer step.
  clip_eps (clip_eps_high): policy-ratio clip range; value_clip_eps: value clip (None: off).
  vf_coef, entropy_coef: weights of the value loss and of the entropy bonus.
  gamma, lam: GAE discount and lambda.
  kl_coef: initial KL-penalty coefficient; kl_target: None for a fixed coefficient, else the
    per-sequence KL the adaptive controller steers to (with kl_horizon); kl_estimator: the
    per-token KL in the reward ("k1", "k2", "k3").
  whiten_advantages: normalize advantages over the rollout batch.
  aggregation: how token losses reduce ("token_mean", "sequence_mean", "token_sum_norm").
  value_model: "separate" (own params, `value_learning_rate`, default the policy's) or "shared".
  learning_rate: overrides the experiment's OptimizerConfig.learning_rate for this stage (the
    experiment shares one OptimizerConfig between its stages; RL wants a smaller rate than SFT).
  old_logprobs: "forward" (recompute with a training forward: exact ratios) or "rollout" (the
    sampler's); the drift between the two is logged either way.
  score_batch_size: rows per scoring forward (policy, reference, value).
  """

  iterations: int = 10
  prompts_per_iteration: int = 64
  samples_per_prompt: int = 1
  num_questions: int | None = None
  split: str = "train"
  temperature: float = 1.0
  max_new_tokens: int = 64
  epochs: int = 2
  minibatch_size: int = 32
  clip_eps: float = 0.2
  clip_eps_high: float | None = None
  value_clip_eps: float | None = 0.2
  vf_coef: float = 0.5
  entropy_coef: float = 0.0
  gamma: float = 1.0
  lam: float = 0.95
  kl_coef: float = 0.05
  kl_target: float | None = None
  kl_horizon: float = 10_000.0
  kl_estimator: str = "k1"
  whiten_advantages: bool = True
  aggregation: str = "token_mean"
  value_model: str = "separate"
  value_learning_rate: float | None = None
  old_logprobs: str = "forward"
  learning_rate: float | None = None
  score_batch_size: int = 64
  sample_batch_size: int = 256
  seed: int = 0
  log_every: int = 10

  def __post_init__(self):
    core.check_choice("PPOConfig.value_model", self.value_model, VALUE_MODELS)
    core.check_choice("PPOConfig.old_logprobs", self.old_logprobs, OLD_LOGPROBS)
    core.check_choice("PPOConfig.kl_estimator", self.kl_estimator, core.KL_ESTIMATORS)
    core.check_choice("PPOConfig.aggregation", self.aggregation, core.AGGREGATIONS)
    positive = ("iterations", "prompts_per_iteration", "samples_per_prompt", "epochs",
                "minibatch_size", "max_new_tokens", "score_batch_size", "sample_batch_size")
    bad = [f"{k}={getattr(self, k)}" for k in positive if getattr(self, k) < 1]
    if self.num_questions is not None and self.num_questions < 1:
      bad.append(f"num_questions={self.num_questions}")
    if self.minibatch_size > self.prompts_per_iteration * self.samples_per_prompt:
      bad.append(f"minibatch_size={self.minibatch_size} (more than the rollout batch, "
                 f"prompts_per_iteration * samples_per_prompt)")
    if bad or self.clip_eps <= 0 or self.kl_coef < 0 or not 0 <= self.lam <= 1 or not (
        0 <= self.gamma <= 1) or (self.kl_target is not None and self.kl_target <= 0):
      raise ValueError(f"PPOConfig: {', '.join(bad) or 'a value'} out of range (counts >= 1, "
                       f"clip_eps > 0, kl_coef >= 0, gamma and lam in [0, 1], kl_target > 0 or "
                       f"None): {self}")


# ------------------------------------------------------------------------------------------------
# Parameters: the policy, the value model, the value head.


def add_value_head(params, config, mesh=None, drop_lm_head: bool = False):
  """`params` plus a zero value head (value_head [E], value_bias []); optionally without lm_head
  (a separate value model never computes logits)."""
  out = {k: v for k, v in params.items() if not (drop_lm_head and k == "lm_head")}
  shapes, _ = decoder.abstract_params(config, ("value",))
  shardings = None if mesh is None else decoder.param_shardings(config, mesh, ("value",))
  for key in VALUE_HEAD:
    zero = jnp.zeros(shapes[key].shape, shapes[key].dtype)
    out[key] = zero if shardings is None else jax.device_put(zero, shardings[key])
  return out


def strip_value_head(params):
  """The policy params alone (the value head removed, when there is one)."""
  return {k: v for k, v in params.items() if k not in VALUE_HEAD}


def initial_params(policy, cfg: PPOConfig) -> dict:
  """{"policy": ..., "value": ...} (separate) or {"policy": trunk with value head} (shared)."""
  if cfg.value_model == "shared":
    return {"policy": add_value_head(policy.params, policy.config, policy.mesh)}
  return {"policy": policy.params,
          "value": add_value_head(policy.params, policy.config, policy.mesh, drop_lm_head=True)}


def _per_model(fn) -> optax.GradientTransformation:
  """A stateless transformation: updates {model: tree} -> {model: fn(model, tree)}."""
  return optax.GradientTransformation(
      lambda params: optax.EmptyState(),
      lambda updates, state, params=None: ({k: fn(k, u) for k, u in updates.items()}, state))


def clip_per_model(max_norm: float) -> optax.GradientTransformation:
  """Clips the updates of each model ({"policy", "value"}) to global norm `max_norm` on its own;
  stateless, so an optimizer chained after it keeps a state that mirrors the params."""
  clip = optax.clip_by_global_norm(max_norm)
  return _per_model(lambda k, u: clip.update(u, optax.EmptyState())[0])


def make_ppo_optimizer(optimizer_cfg, cfg: PPOConfig, total_steps: int):
  """The optimizer over {"policy", "value"}: gradients clipped per model (clip_norm), then the
  AdamW of `optimizer_cfg` at the policy's rate, the value model's updates rescaled to its own
  rate (value_learning_rate, else learning_rate, else the OptimizerConfig's).

  Stateless per-model steps around one AdamW (rather than optax.multi_transform) keep the
  optimizer state a plain mirror of the params, which the sharded `create_state` needs.
  """
  from rlthink.train import make_optimizer
  policy_lr = cfg.learning_rate or optimizer_cfg.learning_rate
  scale = {"policy": 1.0, "value": (cfg.value_learning_rate or policy_lr) / policy_lr}
  adamw = make_optimizer(dataclasses.replace(optimizer_cfg, learning_rate=policy_lr,
                                             clip_norm=None), total_steps)
  return optax.chain(clip_per_model(optimizer_cfg.clip_norm or float("inf")), adamw,
                     _per_model(lambda k, u: jax.tree.map(lambda x: x * scale[k], u)))


# ------------------------------------------------------------------------------------------------
# The loss and the advantages: pure functions.


def ppo_loss(config, cfg: PPOConfig, mesh=None):
  """loss_fn(params, batch, rng) -> (loss, metrics) for `rlthink.train.make_train_step`.

  params: {"policy", "value"} or {"policy"} (shared trunk). batch (token frame, see `core`):
  tokens, attention_mask [B, T]; completion_mask, old_logprobs, old_values, advantages,
  returns [B, T-1]. loss = clipped policy loss + vf_coef * clipped value loss
  - entropy_coef * entropy.
  """

  def loss_fn(params, batch, rng):
    del rng
    tokens, attention = batch["tokens"], batch["attention_mask"]
    score = functools.partial(core.forward_scores, config, tokens=tokens,
                              attention_mask=attention, with_entropy=True, mesh=mesh)
    if "value" in params:
      scores = score(params["policy"], heads=("logits",))
      scores["values"] = score(params["value"], heads=("value",))["values"]
    else:
      scores = score(params["policy"], heads=("logits", "value"))
    mask = batch["completion_mask"]
    pg_loss, pg_metrics = core.clipped_policy_loss(
        scores["logprobs"], batch["old_logprobs"], batch["advantages"], mask, cfg.clip_eps,
        cfg.clip_eps_high, cfg.aggregation)
    vf_loss, vf_metrics = core.clipped_value_loss(scores["values"], batch["old_values"],
                                                  batch["returns"], mask, cfg.value_clip_eps,
                                                  cfg.aggregation)
    entropy = core.entropy_bonus(scores["entropy"], mask, cfg.aggregation)
    if cfg.entropy_coef == 0:
      entropy = jax.lax.stop_gradient(entropy)  # a metric only
    loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy
    return loss, {"policy_loss": pg_loss, "value_loss": vf_loss, "entropy": entropy,
                  **pg_metrics, **vf_metrics}

  return loss_fn


@functools.partial(jax.jit, static_argnames=("gamma", "lam", "kl_estimator", "whiten"))
def compute_advantages(batch: dict, final_rewards: jax.Array, kl_coef: jax.Array, *,
                       gamma: float, lam: float, kl_estimator: str, whiten: bool):
  """Per-token rewards -> GAE. batch needs completion_mask, old_logprobs, ref_logprobs and
  old_values [B, T-1]; final_rewards float[B]. Returns (advantages, returns, stats)."""
  mask = batch["completion_mask"]
  kl = core.kl_estimate(batch["old_logprobs"], batch["ref_logprobs"], kl_estimator) * mask
  rewards = core.per_token_rewards(final_rewards, mask, kl, kl_coef)
  advantages, returns = core.compute_gae(rewards, batch["old_values"], mask, gamma, lam)
  stats = {"kl": jnp.mean(jnp.sum(kl, axis=1)),  # per sequence
           "return_mean": ops.masked_mean(returns, mask),
           "value_mean": ops.masked_mean(batch["old_values"], mask),
           "advantage_std": jnp.sqrt(ops.masked_mean(jnp.square(
               advantages - ops.masked_mean(advantages, mask)), mask))}
  if whiten:
    advantages = core.whiten(advantages, mask)
  return advantages, returns, stats


def score_rollouts(config, params: dict, reference, rollouts, cfg: PPOConfig,
                   mesh=None) -> tuple[dict, dict]:
  """`core.rollout_batch` plus the forward scores: old_logprobs (policy), ref_logprobs,
  old_values [N, T-1]. Returns (batch of numpy arrays, {logprob_drift_mean, logprob_drift_max})."""
  batch = core.rollout_batch(rollouts)
  score = functools.partial(core.score_in_chunks, config, tokens=batch["tokens"],
                            attention_mask=batch["attention_mask"],
                            chunk_size=cfg.score_batch_size, mesh=mesh)
  shared = "value" not in params
  policy_scores = score(params["policy"], heads=("logits", "value") if shared else ("logits",))
  values = policy_scores["values"] if shared else score(params["value"], heads=("value",))["values"]
  stats = core.logprob_drift(policy_scores["logprobs"], batch["old_logprobs"],
                             batch["completion_mask"])
  if cfg.old_logprobs == "forward":
    batch["old_logprobs"] = policy_scores["logprobs"]
  batch["ref_logprobs"] = score(reference, heads=("logits",))["logprobs"]
  batch["old_values"] = values
  return batch, stats


def add_advantages(batch: dict, final_rewards: np.ndarray, kl_coef,
                   cfg: PPOConfig) -> tuple[dict, dict]:
  """The training batch (`TRAIN_KEYS`, numpy) of a scored batch and final rewards float[N], with
  stats (per-sequence KL, mean return and value, advantage std before whitening)."""
  advantages, returns, stats = compute_advantages(
      {k: batch[k] for k in ("completion_mask", "old_logprobs", "ref_logprobs", "old_values")},
      jnp.asarray(final_rewards, jnp.float32), jnp.asarray(kl_coef, jnp.float32),
      gamma=cfg.gamma, lam=cfg.lam, kl_estimator=cfg.kl_estimator,
      whiten=cfg.whiten_advantages)
  batch = dict(batch, advantages=np.asarray(advantages), returns=np.asarray(returns))
  return {k: batch[k] for k in TRAIN_KEYS}, {k: float(v) for k, v in
                                             jax.device_get(stats).items()}


def steps_per_iteration(cfg: PPOConfig) -> int:
  rows = cfg.prompts_per_iteration * cfg.samples_per_prompt
  return cfg.epochs * -(-rows // cfg.minibatch_size)


# ------------------------------------------------------------------------------------------------
# The driver.


def run_ppo(policy, task, cfg: PPOConfig, optimizer_cfg, workdir: str,
            on_iteration: Callable[[int, object], dict] | None = None,
            progress: bool = True):
  """Runs (or resumes from `<workdir>/ppo`) PPO from `policy`; returns (policy, history).

  history: one dict per iteration (reward_mean, kl, kl_coef, logprob drift, losses...).
  on_iteration(i, policy) -> dict of extra metrics (e.g. evaluation), recorded in the history.
  """
  from rlthink.rollout import rollout_examples
  from rlthink.train import Checkpointer, MetricsLogger, create_state, make_train_step, run_steps

  if policy.tokenizer is None:
    raise ValueError("PPO needs a policy with a tokenizer attached")
  task.check_split(cfg.split)
  questions = task.examples(cfg.split)
  if cfg.num_questions is not None:
    questions = [questions[j] for j in range(min(cfg.num_questions, len(questions)))]
  phase_dir = os.path.join(workdir, "ppo")
  ckpt = Checkpointer(phase_dir, policy.config)
  per_iteration = steps_per_iteration(cfg)
  optimizer = make_ppo_optimizer(optimizer_cfg, cfg, cfg.iterations * per_iteration)
  tree = {"state": create_state(initial_params(policy, cfg), optimizer, cfg.seed),
          "reference": core.frozen_reference(policy.params, policy.config),
          "kl": core.init_kl_controller(cfg.kl_coef)}
  meta = {"iteration": 0, "history": []}
  if ckpt.latest_step() is not None:
    tree, meta = ckpt.restore(tree)
  step_fn = make_train_step(ppo_loss(policy.config, cfg, policy.mesh), optimizer, tree["state"],
                            optimizer_cfg.grad_accum_steps)
  logger = MetricsLogger(phase_dir, total=cfg.iterations * per_iteration,
                         initial=meta["iteration"] * per_iteration, desc="ppo", progress=progress)
  rows = cfg.prompts_per_iteration * cfg.samples_per_prompt
  try:
    while meta["iteration"] < cfg.iterations:
      i = meta["iteration"]
      state = tree["state"]
      current = policy.replace(params=strip_value_head(state.params["policy"]))
      examples = [questions[int(j)] for j in core.iteration_indices(
          len(questions), i, cfg.prompts_per_iteration, cfg.seed)]
      clock = time.perf_counter()
      scored = rollout_examples(current, task, examples, num_samples=cfg.samples_per_prompt,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                seed=cfg.seed * 100_003 + i, batch_size=cfg.sample_batch_size)
      times = {"time_rollout_s": time.perf_counter() - clock}
      scores, stats = score_rollouts(policy.config, state.params, tree["reference"],
                                     scored.rollouts, cfg, policy.mesh)
      batch, adv_stats = add_advantages(scores, scored.rewards, tree["kl"].coef, cfg)
      stats.update(adv_stats)
      times["time_score_s"] = time.perf_counter() - clock - times["time_rollout_s"]
      batch_at = lambda s: {k: v[core.minibatch_rows(rows, cfg.minibatch_size, s,
                                                     [cfg.seed, i])] for k, v in batch.items()}
      state, last = run_steps(state, step_fn, batch_at, 0, per_iteration, mesh=policy.mesh,
                              logger=logger, log_every=cfg.log_every,
                              global_offset=i * per_iteration, prefix="ppo/train_")
      times["time_train_s"] = time.perf_counter() - clock - sum(times.values())
      record = {"iteration": i + 1, "reward_mean": float(np.mean(scored.rewards)),
                "kl_coef": float(tree["kl"].coef),
                "completion_length": float(np.mean(scored.rollouts.lengths)), **stats, **times,
                **{k.removeprefix("ppo/train_"): v for k, v in last.items()}}
      kl = core.update_kl_controller(tree["kl"], stats["kl"], rows, cfg.kl_target,
                                     cfg.kl_horizon)
      tree = dict(tree, state=state, kl=kl)
      current = policy.replace(params=strip_value_head(state.params["policy"]))
      meta = core.end_iteration(i, record, tree, meta, current=current, on_iteration=on_iteration,
                                logger=logger, ckpt=ckpt, prefix="ppo/")
  finally:
    logger.close()
  final = policy.replace(params=strip_value_head(tree["state"].params["policy"]))
  return final, meta["history"]


def run_stage(policy, task, optimizer_cfg, workdir, *, evaluate_fn=None, progress=True):
  """The experiment-stage entry point (see `rlthink.algorithms`)."""
  return run_ppo(policy, task, PPOConfig(), optimizer_cfg, workdir,
                 on_iteration=core.eval_callback(evaluate_fn), progress=progress)
