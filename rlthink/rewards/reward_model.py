"""Learned reward models (Havrilla et al. 2024): an outcome reward model (ORM) that predicts whether
a whole solution is right, and a process reward model (PRM) that predicts, per step, whether the
solution is still on track.

Both are the policy's own decoder with the scalar "reward" head (one logit per token) in place of
the language-model head, started from the policy's trunk and a zero head. Training data are
solutions sampled from the policy:
  ORM  label = the verifier's score of the whole solution, on its last token ("last"), or on every
       completion token ("all", the token-level verifier of Cobbe et al. 2021);
  PRM  label = whether each step matches the task's reference steps (`dense.match_steps`), on the
       token that ends the step.
The loss is binary cross-entropy on the logits at the target tokens; the model's probability is
sigmoid(logit). A training row is {"prompt": ids, "completion": ids, "targets": [[j, label], ...]}
with j a completion-token index.

Training them is an algorithm (`rlthink.algorithms.reward_model`: the "orm" and "prm" stages);
`load_reward_model` reads a finished one from its stage directory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlthink import distributed, ops, sharding
from rlthink.models import decoder
from rlthink.models.config import ModelConfig
from rlthink.rewards import dense
from rlthink.train.checkpoint import Checkpointer

KINDS = ("outcome", "process")
ORM_TARGETS = ("last", "all")
REWARD_HEAD = ("reward_head", "reward_bias")


def _check(name: str, value: str, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
  return value


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"],
                   meta_fields=["config", "kind", "mesh"])
@dataclasses.dataclass(frozen=True)
class RewardModel:
  """A reward model: the decoder trunk with a "reward" head. kind: "outcome" or "process"."""

  config: ModelConfig
  params: Any
  kind: str = "outcome"
  mesh: Mesh | None = None


def add_reward_head(params, config: ModelConfig, mesh: Mesh | None = None):
  """The trunk of `params` (no lm_head) plus a zero reward head (reward_head [E], reward_bias [])."""
  out = {k: v for k, v in params.items() if k != "lm_head"}
  shapes, _ = decoder.abstract_params(config, ("reward",))
  shardings = None if mesh is None else decoder.param_shardings(config, mesh, ("reward",))
  for key in REWARD_HEAD:
    zero = jnp.zeros(shapes[key].shape, shapes[key].dtype)
    out[key] = zero if shardings is None else jax.device_put(zero, shardings[key])
  return out


def init_reward_model(policy, kind: str = "outcome") -> RewardModel:
  """A reward model started from `policy`'s trunk with a zero head (every probability 0.5)."""
  _check("kind", kind, KINDS)
  return RewardModel(policy.config, add_reward_head(policy.params, policy.config, policy.mesh),
                     kind, policy.mesh)


# ------------------------------------------------------------------------------------------------
# The loss and scoring.


def reward_model_loss(config: ModelConfig, mesh: Mesh | None = None):
  """loss_fn(params, batch, rng) -> (loss, metrics): binary cross-entropy of the reward logits.

  batch: tokens int32[B, T], attention_mask bool[B, T], target_mask bool[B, T] (the tokens whose
  logit is trained: the logit at column t scores the prefix tokens[:, :t + 1]), labels
  float32[B, T] in [0, 1].
  """

  def loss_fn(params, batch, rng):
    del rng
    out, _ = decoder.forward(config, params, batch["tokens"],
                             attention_mask=batch["attention_mask"], heads=("reward",), mesh=mesh)
    logits, labels = out["reward"], batch["labels"].astype(jnp.float32)
    mask = batch["target_mask"].astype(jnp.float32)
    nll = jax.nn.softplus(logits) - labels * logits  # -[y log s(z) + (1 - y) log(1 - s(z))]
    loss = ops.masked_mean(nll, mask)
    correct = ((logits > 0) == (labels >= 0.5)).astype(jnp.float32)
    return loss, {"accuracy": ops.masked_mean(correct, mask), "targets": jnp.sum(mask)}

  return loss_fn


@functools.partial(jax.jit, static_argnames=("config", "mesh"))
def _reward_logits(config, params, tokens, attention_mask, mesh=None):
  out, _ = decoder.forward(config, params, tokens, attention_mask=attention_mask,
                           heads=("reward",), mesh=mesh)
  return out["reward"]


def reward_logits(rm: RewardModel, tokens: np.ndarray, attention_mask: np.ndarray,
                  batch_size: int = 64) -> np.ndarray:
  """float32[N, T] reward logits of every prefix, in row chunks of one shape (last one wrapped)."""
  n = tokens.shape[0]
  size = max(1, min(batch_size, n))
  put = (lambda x: jnp.asarray(x)) if rm.mesh is None else (
      lambda x: jax.device_put(x, sharding.batch_sharding(rm.mesh, x.shape)))
  parts = []
  for start in range(0, n, size):
    rows = np.arange(start, start + size) % n
    out = _reward_logits(rm.config, rm.params, put(np.asarray(tokens[rows], np.int32)),
                         put(np.asarray(attention_mask[rows], bool)), rm.mesh)
    parts.append(distributed.to_host(out)[:min(size, n - start)])
  return np.concatenate(parts)


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))  # no overflow for any x


def score_rollouts(rm: RewardModel, rollouts, batch_size: int = 64) -> np.ndarray:
  """float32[N]: the ORM's probability that each rollout is right (logit at its last token)."""
  logits = reward_logits(rm, rollouts.tokens, rollouts.mask, batch_size)
  p = rollouts.prompt_tokens.shape[1]
  last = p - 1 + np.asarray(rollouts.lengths)  # an empty completion: the prompt's last token
  return _sigmoid(logits[np.arange(len(last)), last]).astype(np.float32)


def score_rollout_tokens(rm: RewardModel, rollouts, token_indices: Sequence[Sequence[int]],
                         batch_size: int = 64) -> list[np.ndarray]:
  """Per row, float32 probabilities at the given completion tokens (e.g. the PRM at step ends)."""
  logits = reward_logits(rm, rollouts.tokens, rollouts.mask, batch_size)
  p = rollouts.prompt_tokens.shape[1]
  return [_sigmoid(logits[row, p + np.asarray(js, np.int64)]).astype(np.float32)
          for row, js in enumerate(token_indices)]


def binary_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
  """ROC AUC: the probability that a random positive outscores a random negative (ties count
  half). None when either class is missing."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  pos, neg = scores[labels], scores[~labels]
  if not len(pos) or not len(neg):
    return None
  diff = pos[:, None] - neg[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


# ------------------------------------------------------------------------------------------------
# Labels and batches.


def outcome_rows(scored, targets: str = "last") -> list[dict]:
  """ORM rows from `ScoredRollouts`: label = the verifier's reward."""
  _check("orm_targets", targets, ORM_TARGETS)
  ro, rows = scored.rollouts, []
  for row, reward in enumerate(scored.rewards):
    completion = ro.completion(row)
    if not completion:
      continue
    js = range(len(completion)) if targets == "all" else [len(completion) - 1]
    rows.append({"prompt": ro.prompt(row), "completion": completion,
                 "targets": [[j, float(reward)] for j in js]})
  return rows


def process_rows(task, scored, tokenizer, mode: str = "prefix",
                 pattern: str = dense.STEP_PATTERN) -> list[dict]:
  """PRM rows from `ScoredRollouts`: one target per step, label = the step matches the task's
  reference steps. Rows without steps are left out."""
  ro, rows = scored.rollouts, []
  for row, text in enumerate(scored.texts):
    example = scored.examples[row // scored.num_samples]
    references = task.steps(example)
    if references is None:
      raise ValueError(f"task {task.name!r} has no step annotations: a PRM needs them")
    steps, ends = dense.step_tokens(tokenizer, ro.completion(row), text, task.format, pattern)
    if steps:
      labels = dense.match_steps(steps, references, mode)
      rows.append({"prompt": ro.prompt(row), "completion": ro.completion(row),
                   "targets": [[j, float(ok)] for j, ok in zip(ends, labels)]})
  return rows


def reference_rows(task, examples, tokenizer, kind: str, orm_targets: str = "last",
                   step_pattern: str = dense.STEP_PATTERN) -> list[dict]:
  """Rows of the reference solutions: ORM label 1 (on the targets `orm_targets` picks); PRM
  every step (cut by `step_pattern`) 1."""
  from rlthink.tasks.pipeline import encode_prompt  # grain: not on the GPU images
  rows = []
  for example in examples:
    text = task.reference(example)
    completion = list(tokenizer.encode(text, add_special_tokens=False))
    if tokenizer.eos_token_id is not None:
      completion.append(tokenizer.eos_token_id)
    if kind == "outcome":
      js = range(len(completion)) if orm_targets == "all" else [len(completion) - 1]
    else:
      js = dense.step_tokens(tokenizer, completion, text, task.format, step_pattern)[1]
    rows.append({"prompt": encode_prompt(task, example, tokenizer).tolist(),
                 "completion": completion, "targets": [[j, 1.0] for j in js]})
  return rows


def make_batch(rows: Sequence[dict], max_length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Right-padded [B, max_length] arrays: tokens, attention_mask, target_mask, labels. A row
  longer than max_length is cut at the end (with its targets)."""
  b = len(rows)
  tokens = np.full((b, max_length), pad_id, np.int32)
  attention = np.zeros((b, max_length), bool)
  target = np.zeros((b, max_length), bool)
  labels = np.zeros((b, max_length), np.float32)
  for r, row in enumerate(rows):
    ids = (list(row["prompt"]) + list(row["completion"]))[:max_length]
    tokens[r, :len(ids)], attention[r, :len(ids)] = ids, True
    for j, label in row["targets"]:
      col = len(row["prompt"]) + int(j)
      if col < max_length:
        target[r, col], labels[r, col] = True, label
  return {"tokens": tokens, "attention_mask": attention, "target_mask": target, "labels": labels}


def evaluate_rows(rm: RewardModel, rows: Sequence[dict], max_length: int, pad_id: int,
                  batch_size: int = 64) -> dict:
  """Accuracy, AUC and the positive rate of the model's target predictions on `rows`."""
  if not rows:
    return {}
  batch = make_batch(rows, max_length, pad_id)
  probs = _sigmoid(reward_logits(rm, batch["tokens"], batch["attention_mask"], batch_size))
  mask = batch["target_mask"]
  p, y = probs[mask], batch["labels"][mask] >= 0.5
  nll = -np.mean(np.where(y, np.log(np.maximum(p, 1e-12)), np.log(np.maximum(1 - p, 1e-12))))
  return {"accuracy": float(np.mean((p >= 0.5) == y)), "auc": binary_auc(p, y),
          "positive_rate": float(np.mean(y)), "loss": float(nll), "targets": int(mask.sum())}


def load_reward_model(directory: str, kind: str, policy) -> RewardModel:
  """The finished reward model of kind "outcome"/"process" trained in `directory` (its stage's
  directory, `train_reward_model`'s), on `policy`'s devices. Raises naming the directory when it
  is missing or unfinished."""
  _check("kind", kind, KINDS)
  if not os.path.isdir(os.path.join(directory, "checkpoints")):
    raise FileNotFoundError(f"no {kind} reward model under {directory}: train it there first (an "
                            "'orm' / 'prm' stage, or train_reward_model)")
  ckpt = Checkpointer(directory, policy.config)
  meta = ckpt.read_meta()
  if meta is None or meta.get("phase") != "done":
    raise FileNotFoundError(f"the {kind} reward model under {directory} has not finished training")
  ckpt.check_compatible(meta)
  template = init_reward_model(policy, kind)
  params = ckpt.restore_raw()["state"]["params"]
  shardings = jax.tree.map(lambda x: x.sharding, template.params)
  params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, shardings)
  return dataclasses.replace(template, params=params)
