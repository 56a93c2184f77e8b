"""The inner training loop shared by every algorithm: steps, metrics, NaN guard, checkpoints."""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from rlthink.train.metrics import MetricsLogger
from rlthink.train.state import TrainState
from rlthink.train.step import NonFiniteLossError, shard_batch

# Batch keys that mark the tokens a loss learns from (supervised / sampled completions).
LOSS_TOKEN_KEYS = ("loss_mask", "completion_mask")


def run_steps(state: TrainState, step_fn, batch_at: Callable[[int], dict], start: int, stop: int,
              *, mesh: Mesh | None, logger: MetricsLogger, log_every: int = 10,
              checkpoint_every: int = 0, save: Callable[[int, TrainState], None] | None = None,
              last_checkpoint: Callable[[], str | None] | None = None, global_offset: int = 0,
              prefix: str = "train/", checkpointer=None,
              learning_rate: Callable[[TrainState], float] | None = None
              ) -> tuple[TrainState, dict]:
  """Runs steps `start..stop-1` of one phase.

  `batch_at(i)` must be a pure function of i (the data position), so a resumed run sees exactly the
  batches the interrupted one would have; a host batch whose loss mask (`loss_mask` or
  `completion_mask`) selects no token raises ValueError with its numbers. Metrics stay on the
  device until each `log_every` boundary (no per-step host sync). NaN guard: a step whose loss,
  gradient norm or updated parameters are not finite (`make_train_step`'s `finite`) raises
  `NonFiniteLossError` naming that step and the last good checkpoint, always before the state is
  saved. `save(i, state)` is called after step i when `checkpoint_every` divides i and at
  `stop`. `global_offset + i` is the step logged; after each sync `logger.report` may print a
  plain progress line (with `learning_rate(state)`, e.g. `optim.learning_rate_of(cfg)`).

  The last good checkpoint is `checkpointer.describe_last_good()` when a `Checkpointer` is given,
  else the path `last_checkpoint()` returns (None, or a path that does not exist: there is none).
  """
  pending: list[tuple[int, dict]] = []
  last: dict = {}

  def flush():
    nonlocal last
    for i, metrics in pending:
      values = jax.device_get(metrics)
      finite = values.pop("finite", True)
      if not (finite and np.isfinite(values["loss"])):
        raise NonFiniteLossError(
            f"training became non-finite at step {global_offset + i}: "
            f"{_what_is_nonfinite(values)}; stopping before it is saved. "
            f"{_last_good(checkpointer, last_checkpoint)} Lower the learning rate, set "
            "OptimizerConfig.clip_norm or check the data, then resume.")
      last = logger.log(global_offset + i, values, prefix)
    if pending:
      rate = (lambda: learning_rate(state)) if learning_rate is not None else None
      logger.report(global_offset + pending[-1][0], end=global_offset + stop, learning_rate=rate)
    pending.clear()

  for i in range(start, stop):
    batch = batch_at(i)
    check_loss_tokens(batch, global_offset + i + 1)
    state, metrics = step_fn(state, shard_batch(batch, mesh))
    pending.append((i + 1, metrics))
    logger.advance()
    done = i + 1
    checkpoint_now = save is not None and (done == stop or (checkpoint_every and
                                                            done % checkpoint_every == 0))
    if done % log_every == 0 or done == stop or checkpoint_now:
      flush()
    if checkpoint_now:
      save(done, state)
  flush()
  return state, last


def check_loss_tokens(batch: dict, step: int) -> None:
  """Raises ValueError when a host batch's loss mask selects no token (a step on it would train
  on nothing yet report a loss)."""
  for key in LOSS_TOKEN_KEYS:
    mask = batch.get(key)
    if isinstance(mask, np.ndarray) and mask.size and not mask.any():
      attention = batch.get("attention_mask")
      tokens = (f"; its rows hold {int(np.count_nonzero(attention))} tokens in all"
                if isinstance(attention, np.ndarray) else "")
      raise ValueError(
          f"the batch of step {step} has no loss tokens: {key} of shape {mask.shape} is all "
          f"False{tokens}. Every sequence in it was cut before its first target token: raise "
          "the stage's max_length (or shorten the prompts).")


def _what_is_nonfinite(values: dict) -> str:
  loss, grad_norm = values["loss"], values.get("grad_norm")
  parts = []
  if not np.isfinite(loss):
    parts.append(f"loss {loss}")
  if grad_norm is not None and not np.isfinite(grad_norm):
    parts.append(f"gradient norm {grad_norm}")
  if not parts:
    parts.append(f"the updated parameters hold NaN/Inf (loss {loss:.6g}, gradient norm "
                 f"{grad_norm})")
  return ", ".join(parts)


def _last_good(checkpointer, last_checkpoint) -> str:
  if checkpointer is not None:
    return checkpointer.describe_last_good()
  if last_checkpoint is not None:
    path = last_checkpoint()
    if path is not None and os.path.isdir(str(path)):
      return f"The last good checkpoint is {path}."
    return "No checkpoint was saved before it."
  return "Nothing non-finite was saved: resuming restarts from the stage's newest checkpoint."
