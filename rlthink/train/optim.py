"""Optimizers: AdamW with warm-up and cosine/linear/constant decay, gradient clipping.

The schedule's length (the run's total steps) is a value in the optimizer state, not a constant
of the update: loops that train one round after another with a new length each round (Expert
Iteration, RCRL) set it in each round's fresh state (`set_total_steps`) and reuse one compiled
train step for all rounds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rlthink.models.lora import LoRAConfig

SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW settings. `grad_accum_steps` splits each batch into that many micro-batches whose
  gradients are averaged inside the jitted step (same result as the full batch, less memory).
  `lora`: train low-rank adapters on the frozen weights instead of all of them
  (`rlthink.models.lora`; SFT, GRPO, START and Expert Iteration); None: full fine-tuning."""

  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  min_lr_ratio: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float | None = 1.0
  grad_accum_steps: int = 1
  lora: LoRAConfig | None = None

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"OptimizerConfig.schedule={self.schedule!r} is not one of {SCHEDULES}")
    _check("learning_rate", self.learning_rate, float, lambda v: v > 0, "> 0")
    _check("warmup_steps", self.warmup_steps, int, lambda v: v >= 0, ">= 0")
    _check("grad_accum_steps", self.grad_accum_steps, int, lambda v: v >= 1, ">= 1")
    _check("min_lr_ratio", self.min_lr_ratio, float, lambda v: 0 <= v <= 1, "in [0, 1]")
    _check("weight_decay", self.weight_decay, float, lambda v: v >= 0, ">= 0")
    _check("b1", self.b1, float, lambda v: 0 <= v < 1, "in [0, 1)")
    _check("b2", self.b2, float, lambda v: 0 <= v < 1, "in [0, 1)")
    _check("eps", self.eps, float, lambda v: v > 0, "> 0")
    if self.clip_norm is not None:
      # 0 would scale every update to zero; None is how clipping is turned off.
      _check("clip_norm", self.clip_norm, float, lambda v: v > 0, "> 0 (or None: no clipping)")
    if self.lora is not None and not isinstance(self.lora, LoRAConfig):
      raise ValueError(f"OptimizerConfig.lora={self.lora!r}: expected a LoRAConfig "
                       "(gin: OptimizerConfig.lora = @LoRAConfig()) or None")


def _check(name: str, value, kind: type, ok, expected: str) -> None:
  """Raises ValueError naming `OptimizerConfig.<name>` unless `value` is a finite number of
  `kind` (an int is a float; a bool is neither) for which `ok(value)` holds."""
  numeric = (int,) if kind is int else (int, float)
  good_type = isinstance(value, numeric) and not isinstance(value, bool)
  if not good_type or not math.isfinite(value) or not ok(value):
    what = "an integer" if kind is int else "a number"
    raise ValueError(f"OptimizerConfig.{name}={value!r}: expected {what} {expected}")


def learning_rate(cfg: OptimizerConfig, count, total_steps):
  """The learning rate at step `count` (0-based) of a run of `total_steps` steps: linear warm-up
  from 0 over `warmup_steps`, then cosine / linear decay to `min_lr_ratio` x the peak over the
  remaining steps (at least one), or constant. Works on Python numbers and traced arrays."""
  count = jnp.asarray(count, jnp.float32)
  decay_steps = jnp.maximum(jnp.asarray(total_steps, jnp.float32) - cfg.warmup_steps, 1.0)
  peak, floor = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
  done = jnp.clip((count - cfg.warmup_steps) / decay_steps, 0.0, 1.0)
  if cfg.schedule == "cosine":
    decayed = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
  elif cfg.schedule == "linear":
    decayed = peak + (floor - peak) * done
  else:
    decayed = jnp.full_like(done, peak)
  if cfg.warmup_steps == 0:
    return decayed
  return jnp.where(count < cfg.warmup_steps, peak * count / cfg.warmup_steps, decayed)


class ScheduleState(NamedTuple):
  """count: steps taken (int32[]); total_steps: the run's length the schedule decays over."""
  count: jax.Array
  total_steps: jax.Array


def scale_by_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """Scales updates by -learning_rate(cfg, count, total_steps), the length read from the state."""

  def init(params):
    del params
    return ScheduleState(jnp.zeros([], jnp.int32), jnp.asarray(total_steps, jnp.int32))

  def update(updates, state, params=None):
    del params
    rate = learning_rate(cfg, state.count, state.total_steps)
    updates = jax.tree.map(lambda u: (-rate * u).astype(u.dtype), updates)
    return updates, ScheduleState(state.count + 1, state.total_steps)

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """The optax chain: (clip) -> AdamW with the schedule over `total_steps` (the length its
  `init` puts in the state; `set_total_steps` changes it there)."""
  parts = [optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)]
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(cfg.weight_decay))
  parts.append(scale_by_schedule(cfg, total_steps))
  if cfg.clip_norm is not None:
    parts.insert(0, optax.clip_by_global_norm(cfg.clip_norm))
  return optax.chain(*parts)


def set_total_steps(opt_state, total_steps: int):
  """`opt_state` with its schedule's length set to `total_steps` (each value on the device(s)
  of the one it replaces, so a compiled train step takes the new state as it took the old)."""
  if total_steps < 1:
    raise ValueError(f"total_steps must be >= 1, got {total_steps}")

  def set_length(node):
    if not isinstance(node, ScheduleState):
      return node
    value = jnp.asarray(total_steps, node.total_steps.dtype)
    if isinstance(node.total_steps, jax.Array):
      value = jax.device_put(value, node.total_steps.sharding)
    return node._replace(total_steps=value)

  is_schedule = lambda n: isinstance(n, ScheduleState)
  if not any(map(is_schedule, jax.tree.leaves(opt_state, is_leaf=is_schedule))):
    raise ValueError("the optimizer state has no schedule (not from make_optimizer)")
  return jax.tree.map(set_length, opt_state, is_leaf=is_schedule)


def learning_rate_of(cfg: OptimizerConfig):
  """`state -> float`: the learning rate of the last step taken by a TrainState whose optimizer
  `make_optimizer(cfg, ...)` built (read from its schedule state, on the host; for log lines)."""
  is_schedule = lambda n: isinstance(n, ScheduleState)

  def rate(state) -> float:
    schedule = next(n for n in jax.tree.leaves(state.opt_state, is_leaf=is_schedule)
                    if is_schedule(n))
    count, total = jax.device_get((schedule.count, schedule.total_steps))
    return float(learning_rate(cfg, max(int(count) - 1, 0), int(total)))

  return rate
