"""Orbax checkpoints of the train state plus a JSON record of everything else a run needs to resume
exactly (algorithm state, data position, the model config it belongs to)."""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any

import jax
import orbax.checkpoint as ocp

from rlthink.models.config import ModelConfig


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model."""


def ensure_writable(directory: str) -> str:
  """Creates `directory` if needed and checks that files can be written there."""
  directory = os.path.abspath(directory)
  # One probe per process: hosts sharing the workdir check it at the same time.
  probe = os.path.join(directory, f".rlthink_write_probe.{socket.gethostname()}.{os.getpid()}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"workdir {directory!r} is not writable: {e.strerror or e}") from None
  return directory


class Checkpointer:
  """Saves and restores (TrainState, meta) pairs under `directory`, keeping the last `max_to_keep`.

  Saving is synchronous and atomic (orbax writes a temporary directory and renames it), so a run
  killed at any moment leaves the previous checkpoints intact.
  """

  def __init__(self, directory: str, model_config: ModelConfig, max_to_keep: int = 2):
    self.directory = os.path.join(ensure_writable(directory), "checkpoints")
    self.model_config = model_config
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    meta = dict(meta, model_config=dataclasses.asdict(self.model_config))
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def read_meta(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def check_compatible(self, meta: dict) -> None:
    saved = meta.get("model_config", {})
    current = dataclasses.asdict(self.model_config)
    # dtype/attention/remat/unroll choices do not change the parameters.
    ignore = {"dtype", "attention_impl", "remat", "max_seq_len", "scan_unroll"}
    # A field the checkpoint predates counts as its default (added fields must default to the
    # old behaviour).
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    diff = {k: (saved.get(k, defaults[k]), v) for k, v in current.items()
            if k not in ignore and saved.get(k, defaults[k]) != v}
    if diff:
      fields = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in sorted(diff.items()))
      raise CheckpointMismatchError(
          f"{self.directory} holds a checkpoint of a different model ({fields}). Use another "
          f"--workdir or the matching model config; the checkpoint was left untouched.")

  def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the shapes, dtypes and shardings of `state_like`. Returns (state, meta)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    meta = self.read_meta(step)
    self.check_compatible(meta)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def restore_raw(self, step: int | None = None) -> Any:
    """The saved state tree as host arrays, without a template (e.g. to read only the params)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]

  def close(self) -> None:
    self._manager.close()
