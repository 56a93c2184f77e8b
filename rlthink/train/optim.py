"""Optimizers: AdamW with warm-up and cosine/linear/constant decay, gradient clipping."""

from __future__ import annotations

import dataclasses

import gin
import optax

SCHEDULES = ("constant", "cosine", "linear")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW settings. `grad_accum_steps` splits each batch into that many micro-batches whose
  gradients are averaged inside the jitted step (same result as the full batch, less memory)."""

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

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"OptimizerConfig.schedule={self.schedule!r} is not one of {SCHEDULES}")
    if self.learning_rate <= 0 or self.warmup_steps < 0 or self.grad_accum_steps < 1:
      raise ValueError(f"OptimizerConfig: learning_rate must be > 0, warmup_steps >= 0 and "
                       f"grad_accum_steps >= 1, got {self}")


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  decay_steps = max(total_steps - cfg.warmup_steps, 1)
  end = cfg.learning_rate * cfg.min_lr_ratio
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps, cfg.min_lr_ratio)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.learning_rate, end, decay_steps)
  else:
    decay = optax.constant_schedule(cfg.learning_rate)
  if cfg.warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """The optax chain: (clip) -> AdamW(schedule)."""
  adamw = optax.adamw(learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay)
  if cfg.clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
