"""The inner training loop shared by every algorithm: steps, metrics, NaN guard, checkpoints."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from rlthink.train.metrics import MetricsLogger
from rlthink.train.state import TrainState
from rlthink.train.step import NonFiniteLossError, shard_batch


def run_steps(state: TrainState, step_fn, batch_at: Callable[[int], dict], start: int, stop: int,
              *, mesh: Mesh | None, logger: MetricsLogger, log_every: int = 10,
              checkpoint_every: int = 0, save: Callable[[int, TrainState], None] | None = None,
              last_checkpoint: Callable[[], str] = lambda: "none", global_offset: int = 0,
              prefix: str = "train/") -> tuple[TrainState, dict]:
  """Runs steps `start..stop-1` of one phase.

  `batch_at(i)` must be a pure function of i (the data position), so a resumed run sees exactly the
  batches the interrupted one would have. Metrics stay on the device until each `log_every`
  boundary (no per-step host sync); a non-finite loss raises `NonFiniteLossError` naming the step
  and the last good checkpoint, before anything is saved. `save(i, state)` is called after step i
  when `checkpoint_every` divides i and at `stop`. `global_offset + i` is the step logged.
  """
  pending: list[tuple[int, dict]] = []
  last: dict = {}

  def flush():
    nonlocal last
    for i, metrics in pending:
      values = jax.device_get(metrics)
      if not np.isfinite(values["loss"]):
        raise NonFiniteLossError(
            f"loss is {values['loss']} at step {global_offset + i}; stopping. The last good "
            f"checkpoint is {last_checkpoint()}")
      last = logger.log(global_offset + i, values, prefix)
    pending.clear()

  for i in range(start, stop):
    state, metrics = step_fn(state, shard_batch(batch_at(i), mesh))
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
