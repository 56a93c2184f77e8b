"""Orbax checkpoints of the train state plus a JSON record of everything else a run needs to resume
exactly (algorithm state, data position, the model config it belongs to).

Integrity: a state with a NaN or Inf is never saved; every saved step directory gets a sidecar
`rlthink_checksums.json` (the sha256 of each of its files), verified before the step is read. A
restore without an explicit step falls back from a corrupt newest checkpoint to the newest good
one, with a warning naming the bad one, which is moved aside to `<step>.corrupt` so the resumed
run can save that step again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import socket
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from rlthink.files import atomic_write_json
from rlthink.models.config import ModelConfig, eos_ids
from rlthink.train.step import NonFiniteLossError

_log = logging.getLogger(__name__)

CHECKSUMS = "rlthink_checksums.json"


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of a different model."""


class CorruptCheckpointError(ValueError):
  """A checkpoint's files do not match the checksums written with it (or cannot be read)."""


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
  killed at any moment leaves the previous checkpoints intact. read_only: open without writing
  (None: read-only exactly when `directory` holds checkpoints but is not writable, e.g. sampling
  from another user's run); `save` then raises PermissionError.
  """

  def __init__(self, directory: str, model_config: ModelConfig, max_to_keep: int = 2,
               read_only: bool | None = None):
    directory = os.path.abspath(directory)
    self.directory = os.path.join(directory, "checkpoints")
    self.read_only = bool(read_only)
    if not read_only:
      try:
        ensure_writable(directory)
      except PermissionError:
        if read_only is not None or not os.path.isdir(self.directory):
          raise
        self.read_only = True
    self.model_config = model_config
    self._verified: dict[int, bool] = {}  # step -> checksums verified (False: none written)
    # Steps found corrupt and skipped by a fallback: a caller that needs a stage's final
    # checkpoint (not just a resumable one) checks this is empty.
    self.corrupt_steps: list[int] = []
    if self.read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             enable_async_checkpointing=False)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest saved step (not verified: `restore` checks it and falls back)."""
    return self._manager.latest_step()

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves `state` and `meta` as checkpoint `step`, then its checksums.

    Raises NonFiniteLossError (saving nothing) when a float in `state` is NaN or Inf.
    """
    if self.read_only:
      raise PermissionError(f"{self.directory} was opened read-only; cannot save step {step}")
    bad = nonfinite_leaves(state)
    if bad:
      raise NonFiniteLossError(
          f"refusing to save a non-finite state as checkpoint {self.step_path(step)} "
          f"({len(bad)} arrays hold NaN/Inf, e.g. {', '.join(bad[:3])}). "
          f"{self.describe_last_good()}")
    meta = dict(meta, model_config=dataclasses.asdict(self.model_config))
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()
    if jax.process_index() == 0:  # the workdir is shared: one process writes the sidecar
      path = self.step_path(step)
      atomic_write_json(os.path.join(path, CHECKSUMS),
                        {"algorithm": "sha256", "files": _hash_files(path)}, sort_keys=True)
    self._verified[step] = True

  def verify(self, step: int) -> bool:
    """Checks checkpoint `step`'s files against its checksums. Returns False when it has none
    (saved before checksums existed, or killed between orbax's commit and the sidecar).

    Raises CorruptCheckpointError naming the step directory and the first bad file.
    """
    if step in self._verified:
      return self._verified[step]
    path = self.step_path(step)
    try:
      with open(os.path.join(path, CHECKSUMS)) as f:
        expected = json.load(f)["files"]
    except FileNotFoundError:
      if not os.path.isdir(path):
        raise CorruptCheckpointError(f"checkpoint {path} is missing") from None
      self._verified[step] = False
      return False
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise CorruptCheckpointError(f"checkpoint {path}: unreadable {CHECKSUMS} ({e})") from None
    actual = _hash_files(path)
    for name in sorted(expected):
      if name not in actual:
        raise CorruptCheckpointError(f"checkpoint {path}: file {name} is missing")
      if actual[name] != expected[name]:
        raise CorruptCheckpointError(f"checkpoint {path}: file {name} does not match its "
                                     "checksum (changed or damaged after it was saved)")
    self._verified[step] = True
    return True

  def good_step(self) -> int | None:
    """The newest step that verifies (a corrupt newer one is warned about and moved aside), or
    None when there is no checkpoint. Raises CorruptCheckpointError when every one is corrupt."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    problems, good = [], None
    for step in steps:
      try:
        self.verify(step)
      except CorruptCheckpointError as e:
        problems.append(str(e))
        self.corrupt_steps.append(step)
        _log.warning("%s; %s", e, "falling back to the previous checkpoint" if step != steps[-1]
                     else "there is no older checkpoint")
        self._set_aside(step)
        continue
      good = step
      break
    if problems:
      self._manager.reload()
      if good is None:
        raise CorruptCheckpointError(f"every checkpoint under {self.directory} is corrupt: "
                                     f"{'; '.join(problems)}")
    return good

  def last_good(self) -> str | None:
    """The path of the newest checkpoint that verifies, or None when there is none."""
    try:
      step = self.good_step()
    except CorruptCheckpointError:
      return None
    return None if step is None else self.step_path(step)

  def describe_last_good(self) -> str:
    """"The last good checkpoint is <path>." or a sentence saying there is none."""
    path = self.last_good()
    if path is None:
      return f"There is no good checkpoint under {self.directory} yet."
    return f"The last good checkpoint is {path}."

  def read_meta(self, step: int | None = None) -> dict | None:
    """The JSON meta of `step` (default: the newest good checkpoint), None when there is none."""
    step = self.good_step() if step is None else self._checked(step)
    if step is None:
      return None
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def check_compatible(self, meta: dict) -> None:
    saved = dict(meta.get("model_config", {}))
    if "eos_token_id" in saved:  # an int (or None) before it became a tuple; JSON gives lists
      saved["eos_token_id"] = eos_ids(saved["eos_token_id"])
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
    """Restores into the shapes, dtypes and shardings of `state_like`. Returns (state, meta).

    step None: the newest good checkpoint (see `good_step`); an explicit step that fails its
    checksums raises CorruptCheckpointError.
    """
    step = self._step_or_latest(step)
    meta = self.read_meta(step)
    self.check_compatible(meta)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def restore_raw(self, step: int | None = None) -> Any:
    """The saved state tree as host arrays, without a template (e.g. to read only the params)."""
    step = self._step_or_latest(step)
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]

  def close(self) -> None:
    self._manager.close()

  def _step_or_latest(self, step: int | None) -> int:
    step = self.good_step() if step is None else self._checked(step)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return step

  def _checked(self, step: int) -> int:
    self.verify(step)
    return step

  def _set_aside(self, step: int) -> None:
    """Moves a corrupt step directory to `<step>.corrupt[-n]` (kept for inspection; orbax ignores
    it), so the run can save that step number again."""
    if self.read_only or jax.process_index() != 0:
      return
    source, target = self.step_path(step), self.step_path(step) + ".corrupt"
    n = 1
    while os.path.exists(target):
      n += 1
      target = f"{self.step_path(step)}.corrupt-{n}"
    try:
      os.rename(source, target)
      _log.warning("moved the corrupt checkpoint %s to %s", source, target)
    except OSError as e:
      _log.warning("could not move the corrupt checkpoint %s aside: %s", source, e)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"rlthink_set_aside_{step}")


def nonfinite_leaves(tree: Any) -> list[str]:
  """The key paths of the floating-point arrays in `tree` that hold a NaN or Inf (an on-device
  reduction per array, one transfer of the booleans)."""
  paths, leaves = [], []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
      paths.append(jax.tree_util.keystr(path))
      leaves.append(leaf)
  if not leaves:
    return []
  try:
    finite = _all_finite(leaves)
  except ValueError:  # arrays on different devices: one reduction each
    finite = [_all_finite([leaf])[0] for leaf in leaves]
  finite = np.asarray(jax.device_get(finite))
  return [p for p, ok in zip(paths, finite) if not ok]


@jax.jit
def _all_finite(leaves):
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def _hash_files(directory: str) -> dict[str, str]:
  """{path relative to `directory`: sha256 hex} of every file under it but the checksum file."""
  files = []
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, directory)
      if relative != CHECKSUMS and not name.startswith(f".{CHECKSUMS}.tmp-"):
        files.append((relative, path))

  def digest(path: str) -> str:
    h = hashlib.sha256()
    try:
      with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
          h.update(chunk)
    except OSError as e:
      return f"unreadable: {e.strerror or e}"
    return h.hexdigest()

  # hashlib releases the GIL on large buffers: threads hash big shards in parallel.
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
    digests = pool.map(digest, [path for _, path in files])
    return dict(zip([relative for relative, _ in files], digests))
