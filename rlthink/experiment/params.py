"""The experiment's model: built from the gin-bound specs, given its tokenizer, and the final
parameters of a stage read back from the stage's checkpoints."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from rlthink.algorithms.ppo import strip_value_head
from rlthink.experiment import fingerprint
from rlthink.gin_utils import MeshSpec, ModelSpec
from rlthink.models import lora
from rlthink.train import Checkpointer
from rlthink.train.checkpoint import CorruptCheckpointError


def build_policy(seed_offset: int = 0):
  """The gin-bound `ModelSpec` built on the gin-bound `MeshSpec`'s mesh (its automatic shape is
  chosen for that model when `MeshSpec.shape` is None); `seed_offset` is added to the init seed
  (an experiment's seed)."""
  spec = ModelSpec()
  if seed_offset:
    spec = dataclasses.replace(spec, seed=spec.seed + seed_offset)
  return spec.build(MeshSpec().build(config=spec.config()))


def tokenizer_spec(spec: str | None) -> str | None:
  """`Experiment.tokenizer` resolved: "auto" is the model directory's own tokenizer (None) when
  `ModelSpec.hf_path` names one, else "builtin" (presets hold random weights for any tokenizer)."""
  if spec != "auto":
    return spec
  return None if ModelSpec().hf_path is not None else "builtin"


def attach_tokenizer(policy, spec: str | None, tokenizer=None):
  """The policy with its tokenizer ("auto": see `tokenizer_spec`; "builtin"; a local directory;
  None: the model's own; or an already built `tokenizer`) and the tokenizer's special ids in its
  config. A tokenizer the model cannot embed (more tokens than vocab_size, or a special id out of
  range) is an error."""
  from rlthink.models import tokenizer as tok  # transformers loads only when a model needs it
  own = tokenizer is None and tokenizer_spec(spec) is None
  if tokenizer is None:
    spec = tokenizer_spec(spec)
    if spec is None:
      if policy.tokenizer is None:
        raise ValueError(f"the model directory {ModelSpec().hf_path} has no tokenizer files; "
                         "add them, or name one with Experiment.tokenizer")
      tokenizer = policy.tokenizer
    else:
      tokenizer = tok.builtin_tokenizer() if spec == "builtin" else tok.load_tokenizer(spec)
  config = policy.config
  if len(tokenizer) > config.vocab_size:
    raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                     f"{config.vocab_size}: they do not belong together")
  if own:  # the model's own tokenizer: the config's ids stand; fill in only what it lacks
    config = config.replace(
        pad_token_id=_first(config.pad_token_id, tokenizer.pad_token_id),
        bos_token_id=_first(config.bos_token_id, tokenizer.bos_token_id),
        eos_token_id=config.eos_token_id or tokenizer.eos_token_id)
  elif config.pad_token_id is None and tokenizer.pad_token_id is not None:
    config = config.replace(pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.bos_token_id)
  specials = {f"tokenizer {name}": getattr(tokenizer, f"{name}_id", None)
              for name in ("pad_token", "bos_token", "eos_token", "unk_token")}
  specials.update({"ModelConfig.pad_token_id": config.pad_token_id,
                   "ModelConfig.bos_token_id": config.bos_token_id,
                   **{f"ModelConfig.eos_token_id {i}": i for i in config.eos_token_id}})
  bad = {name: i for name, i in specials.items() if i is not None and not 0 <= i < config.vocab_size}
  if bad:
    raise ValueError(f"special token ids {bad} are outside the model's vocabulary "
                     f"[0, {config.vocab_size}): the tokenizer does not belong to this model")
  return policy.replace(tokenizer=tokenizer, config=config)


def _first(*values):
  return next((v for v in values if v is not None), None)


def load_stage_params(workdir: str, stage: str, policy, initial=None):
  """The policy parameters of the latest checkpoint of `stage` in `workdir`, on the policy's
  devices and shardings. Raises naming the directory when there is none or it does not match,
  and `CorruptCheckpointError` when the newest checkpoint fails its checksums (an older one is
  not the stage's result; `rlthink train` on the workdir re-runs the stage from it).

  A LoRA stage (`OptimizerConfig.lora`) checkpoints only its adapters; its result is the params
  it started from (its parent's result, read back the same way, or the experiment's initial
  model) with the adapters on them, as the stage returned it: `lora.combine(base, adapters)`
  (the sampler and the export merge them). Its stage.json says what it started from
  (`lora_start`). initial: the experiment's initial params, when the caller holds them; else
  the initial model is built again from the ModelSpec and seed recorded there.
  """
  params = _checkpoint_params(workdir, stage, policy)
  if set(params) == {"layers"} and lora.has_adapters(params):
    return _lora_stage_params(workdir, stage, params, policy, initial)
  shardings = jax.tree.map(lambda x: x.sharding, policy.params)
  return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, shardings)


def _checkpoint_params(workdir: str, stage: str, policy):
  """The params of the stage's final checkpoint, as stored (host arrays)."""
  directory = os.path.join(workdir, stage)
  if not os.path.isdir(os.path.join(directory, "checkpoints")):
    raise FileNotFoundError(f"no checkpoints of stage {stage!r} under {directory}")
  ckpt = Checkpointer(directory, policy.config)
  try:
    meta = ckpt.read_meta()
    problem = None
  except CorruptCheckpointError as e:
    meta, problem = None, str(e)
  if ckpt.corrupt_steps:
    why = problem or "an older checkpoint is not the stage's result"
    raise CorruptCheckpointError(
        f"the final checkpoint of stage {stage!r} (step {max(ckpt.corrupt_steps)} under "
        f"{ckpt.directory}) is corrupt and was moved aside ({why}). Run `rlthink train` on "
        f"{workdir} again to redo the stage from its last good checkpoint, or from its start.")
  if meta is None:
    raise FileNotFoundError(f"no checkpoints of stage {stage!r} under {directory}")
  ckpt.check_compatible(meta)
  tree = ckpt.restore_raw()
  # Drivers save a TrainState ({"params", ...}) or {"state": TrainState, ...}.
  node = tree.get("state", tree) if isinstance(tree, dict) else tree
  node = node.get("policy", node) if isinstance(node, dict) and "params" not in node else node
  params = node["params"]
  if isinstance(params, dict) and "policy" in params:  # PPO trains {"policy", "value"}
    params = strip_value_head(params["policy"])  # a shared trunk carries the value head
  return params


def lora_start(cfg: lora.LoRAConfig | None, parent: str | None, seed_offset: int) -> dict | None:
  """What a LoRA stage's result is read back from, for its stage.json ("lora"): its LoRAConfig,
  its parent, and for a stage without one the experiment's initial model (the gin-bound
  `ModelSpec` and the experiment's seed, `build_policy`). None when `cfg` is None."""
  if cfg is None:
    return None
  record = {"config": dataclasses.asdict(cfg), "parent": parent}
  if parent is None:
    record.update(model=dataclasses.asdict(ModelSpec()), seed_offset=seed_offset)
  return record


def _lora_stage_params(workdir: str, stage: str, adapters, policy, initial):
  """The result of LoRA stage `stage`: its start params (merged, cast as the driver did,
  `lora.trainable`) combined with its checkpointed `adapters`."""
  directory = os.path.join(workdir, stage)
  record = fingerprint.read(directory) or {}
  start = record.get("lora")
  if start is None:
    raise ValueError(f"stage {stage!r} under {directory} trained LoRA adapters "
                     f"(OptimizerConfig.lora) but its {fingerprint.RECORD} does not say what it "
                     "started from (no \"lora\" entry), so its result cannot be read back; "
                     "delete the directory to train the stage again")
  cfg = lora.LoRAConfig(**start["config"])
  parent = start["parent"]
  if parent is not None:
    _check_parent_unchanged(workdir, stage, parent, record)
    base = load_stage_params(workdir, parent, policy, initial)
  elif initial is not None:
    base = initial
  else:
    base = _initial_params(start["model"], start["seed_offset"], policy)
  base = lora.cast_base(lora.merge(base), cfg.base_dtype)
  try:
    adapters = lora.place_adapters(jax.tree.map(np.asarray, adapters), policy.config, cfg,
                                   policy.mesh)
  except ValueError as e:
    raise ValueError(f"stage {stage!r} under {directory}: {e}") from None
  return lora.combine(base, adapters, cfg)


def _check_parent_unchanged(workdir: str, stage: str, parent: str, record: dict) -> None:
  """The parent's final params are what `stage` trained on: the parent finished, with the
  settings whose digest the stage's fingerprint holds."""
  saved = fingerprint.read(os.path.join(workdir, parent))
  expected = record.get("fingerprint", {}).get("parent")
  if (saved is None or not saved.get("done")
      or fingerprint.digest(saved.get("fingerprint", {})) != expected):
    raise ValueError(
        f"LoRA stage {stage!r} in {workdir} trained adapters on the final params of stage "
        f"{parent!r}, which are no longer there (the parent is unfinished, missing or was re-run "
        f"with other settings): the adapters cannot be applied. Run `rlthink train` on "
        f"{workdir} to train {stage!r} again on the parent's current result")


def _initial_params(model: dict, seed_offset: int, policy):
  """The experiment's initial params, built again from the recorded ModelSpec and seed on the
  policy's mesh and shardings (the same values: initialisation is a function of the seed)."""
  spec = ModelSpec(**model)
  spec = dataclasses.replace(spec, seed=spec.seed + seed_offset)
  params = spec.build(policy.mesh).params
  shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)
  if shapes(params) != shapes(policy.params):
    raise ValueError(f"the experiment's initial model (ModelSpec {model}, seed offset "
                     f"{seed_offset}) does not match the model of this command: its params "
                     "differ in shape or dtype")
  shardings = jax.tree.map(lambda x: x.sharding, policy.params)
  return jax.device_put(params, shardings)


def final_checkpoint_intact(workdir: str, stage: str, model_config) -> bool:
  """Whether the newest checkpoint of a finished `stage` passes its checksums: no newer step was
  found corrupt (now or by an earlier run: moved aside as `<step>.corrupt`, see
  `Checkpointer.good_step`). Re-running the stage then resumes from the newest good one, or from
  its start when none is left."""
  directory = os.path.join(workdir, stage)
  root = os.path.join(directory, "checkpoints")
  if not os.path.isdir(root):
    return False
  try:
    step = Checkpointer(directory, model_config).good_step()
  except CorruptCheckpointError:
    return False
  set_aside = [int(n.split(".")[0]) for n in os.listdir(root)
               if ".corrupt" in n and n.split(".")[0].isdigit()]
  return step is not None and all(s < step for s in set_aside)


def check_stage_checkpoints(workdir: str, stages, model_config) -> None:
  """Raises `CheckpointMismatchError` when a stage's checkpoints in `workdir` belong to a model
  other than `model_config` (reads only; nothing is written)."""
  for stage in stages:
    directory = os.path.join(workdir, stage)
    if os.path.isdir(os.path.join(directory, "checkpoints")):
      ckpt = Checkpointer(directory, model_config)
      try:
        meta = ckpt.read_meta()
      except CorruptCheckpointError:
        continue  # nothing left to compare; the stage runs again (`final_checkpoint_intact`)
      if meta is not None:
        ckpt.check_compatible(meta)
