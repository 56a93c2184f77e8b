"""The experiment's model: built from the gin-bound specs, given its tokenizer, and the final
parameters of a stage read back from the stage's checkpoints."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from rlthink.gin_utils import MeshSpec, ModelSpec
from rlthink.train import Checkpointer


def build_policy(seed_offset: int = 0):
  """The gin-bound `ModelSpec` built on the gin-bound `MeshSpec`'s mesh (its automatic shape is
  chosen for that model when `MeshSpec.shape` is None); `seed_offset` is added to the init seed
  (an experiment's seed)."""
  spec = ModelSpec()
  if seed_offset:
    spec = dataclasses.replace(spec, seed=spec.seed + seed_offset)
  return spec.build(MeshSpec().build(config=spec.config()))


def attach_tokenizer(policy, spec: str | None, tokenizer=None):
  """The policy with its tokenizer ("builtin", a local directory, None: the model's own, or an
  already built `tokenizer`) and the tokenizer's special ids in its config."""
  from rlthink.models import tokenizer as tok  # transformers loads only when a model needs it
  if tokenizer is None:
    if spec is None:
      if policy.tokenizer is None:
        raise ValueError("Experiment.tokenizer=None but the model directory has no tokenizer")
      tokenizer = policy.tokenizer
    else:
      tokenizer = tok.builtin_tokenizer() if spec == "builtin" else tok.load_tokenizer(spec)
  if len(tokenizer) > policy.config.vocab_size:
    raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                     f"{policy.config.vocab_size}")
  config = policy.config
  if config.pad_token_id is None and tokenizer.pad_token_id is not None:
    config = config.replace(pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.bos_token_id)
  return policy.replace(tokenizer=tokenizer, config=config)


def load_stage_params(workdir: str, stage: str, policy):
  """The policy parameters of the latest checkpoint of `stage` in `workdir`, on the policy's
  devices and shardings. Raises naming the directory when there is none or it does not match."""
  directory = os.path.join(workdir, stage)
  if not os.path.isdir(os.path.join(directory, "checkpoints")):
    raise FileNotFoundError(f"no checkpoints of stage {stage!r} under {directory}")
  ckpt = Checkpointer(directory, policy.config)
  meta = ckpt.read_meta()
  if meta is None:
    raise FileNotFoundError(f"no checkpoints of stage {stage!r} under {directory}")
  ckpt.check_compatible(meta)
  tree = ckpt.restore_raw()
  # Drivers save a TrainState ({"params", ...}) or {"state": TrainState, ...}.
  node = tree.get("state", tree) if isinstance(tree, dict) else tree
  node = node.get("policy", node) if isinstance(node, dict) and "params" not in node else node
  params = node["params"]
  shardings = jax.tree.map(lambda x: x.sharding, policy.params)
  return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, shardings)


def check_stage_checkpoints(workdir: str, stages, model_config) -> None:
  """Raises `CheckpointMismatchError` when a stage's checkpoints in `workdir` belong to a model
  other than `model_config` (reads only; nothing is written)."""
  for stage in stages:
    directory = os.path.join(workdir, stage)
    if os.path.isdir(os.path.join(directory, "checkpoints")):
      ckpt = Checkpointer(directory, model_config)
      meta = ckpt.read_meta()
      if meta is not None:
        ckpt.check_compatible(meta)
