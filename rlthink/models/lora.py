"""LoRA: low-rank adapters on chosen projections, trained while the base weights stay frozen.

A targeted weight W (e.g. `layers/attn/q_proj`, [L, E, H, D]) gets two adapter matrices, A
[L, *in, r] (random) and B [L, r, *out] (zero), and the layer computes x W + (alpha / r) (x A) B,
so the adapted model equals the base at initialisation (Hu et al. 2021).

Three trees, all plain dicts of the decoder's parameter layout:

  base      the policy's params, frozen (optionally cast to bf16: `LoRAConfig.base_dtype`).
  adapters  what the train state holds and the optimizer updates: `<name>_lora_a` and
            `<name>_lora_b` beside each targeted weight's path, nothing else (`init_adapters`).
  combined  `combine(base, adapters, cfg)`: the base's leaves (the same arrays, no copy) plus the
            adapters, B scaled by alpha / r. `decoder.forward` runs it as is (the extra matmuls of
            `decoder._matmul`); the sampler and the Hugging Face export `merge` it into plain
            weights first.

The reference policy of an RL stage with LoRA is the base itself (adapters off), not a copy.
A driver gets all of this from `trainable(policy, optimizer_cfg.lora)` (`Trainable`).
Export: `merge` + `Policy.save_pretrained` (a full Hugging Face model), or `save_peft` (an adapter
folder in PEFT's format).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from rlthink import sharding
from rlthink.models.config import ModelConfig

A_SUFFIX, B_SUFFIX = "_lora_a", "_lora_b"

# Targetable weights: name -> (module under "layers", input axes, output axes) as (logical name,
# ModelConfig size field) pairs; the weight is [L, *in, *out].
_E, _H, _K, _D, _M = (("embed", "hidden_size"), ("heads", "num_heads"),
                      ("kv_heads", "num_kv_heads"), ("head_dim", "head_dim"),
                      ("mlp", "intermediate_size"))
TARGETS = {
    "q_proj": ("attn", (_E,), (_H, _D)),
    "k_proj": ("attn", (_E,), (_K, _D)),
    "v_proj": ("attn", (_E,), (_K, _D)),
    "o_proj": ("attn", (_H, _D), (_E,)),
    "gate_proj": ("mlp", (_E,), (_M,)),
    "up_proj": ("mlp", (_E,), (_M,)),
    "down_proj": ("mlp", (_M,), (_E,)),
}
# Hugging Face module of each target (PEFT's adapter names).
_HF_MODULES = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
               "v_proj": "self_attn.v_proj", "o_proj": "self_attn.o_proj",
               "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """Low-rank adapters (bound in gin as `OptimizerConfig.lora = @LoRAConfig()`).

  rank: r, the adapters' inner width. alpha: the update is scaled by alpha / rank.
  targets: the projections adapted, names of `TARGETS` (q/k/v/o_proj, gate/up/down_proj).
  base_dtype: None keeps the base weights as they are; "bfloat16" casts the frozen base (matmul
    weights and embeddings, not norm scales) for training, scoring and the reference policy,
    halving its memory under float32 master weights.
  seed: the adapters' initialisation.
  """

  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
  base_dtype: str | None = None
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
      raise ValueError(f"LoRAConfig.rank={self.rank!r} must be an int >= 1")
    if not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
      raise ValueError(f"LoRAConfig.alpha={self.alpha!r} must be a number > 0")
    unknown = [t for t in self.targets if t not in TARGETS]
    if not self.targets or unknown or len(set(self.targets)) != len(self.targets):
      raise ValueError(f"LoRAConfig.targets={self.targets!r} must be distinct names of "
                       f"{sorted(TARGETS)}")
    if self.base_dtype not in (None, "float32", "bfloat16", "float16"):
      raise ValueError(f"LoRAConfig.base_dtype={self.base_dtype!r} must be None, 'float32', "
                       "'bfloat16' or 'float16'")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def _sizes(config: ModelConfig, axes) -> tuple[int, ...]:
  return tuple(getattr(config, field) for _, field in axes)


def adapter_shapes(config: ModelConfig, cfg: LoRAConfig) -> tuple[dict, dict]:
  """(shapes, logical axes) of the adapter tree: {"layers": {module: {name_lora_a: [L, *in, r],
  name_lora_b: [L, r, *out]}}}."""
  shapes, logical = {}, {}
  for name in cfg.targets:
    module, ins, outs = TARGETS[name]
    shape_in, shape_out = _sizes(config, ins), _sizes(config, outs)
    shapes.setdefault(module, {})
    logical.setdefault(module, {})
    shapes[module][name + A_SUFFIX] = (config.num_layers, *shape_in, cfg.rank)
    shapes[module][name + B_SUFFIX] = (config.num_layers, cfg.rank, *shape_out)
    logical[module][name + A_SUFFIX] = ("layers", *(a for a, _ in ins), None)
    logical[module][name + B_SUFFIX] = ("layers", None, *(a for a, _ in outs))
  return {"layers": shapes}, {"layers": logical}


def num_adapter_params(config: ModelConfig, cfg: LoRAConfig) -> int:
  """r * (in + out) per targeted matrix per layer."""
  total = 0
  for name in cfg.targets:
    _, ins, outs = TARGETS[name]
    total += cfg.rank * (math.prod(_sizes(config, ins)) + math.prod(_sizes(config, outs)))
  return total * config.num_layers


def init_adapters(config: ModelConfig, cfg: LoRAConfig, mesh=None) -> dict:
  """Fresh adapters in the master parameter dtype: A uniform in +-1/sqrt(fan_in) (PEFT's
  default), B zero, so the adapted model starts as the base. On `mesh` when given."""
  shapes, logical = adapter_shapes(config, cfg)
  dtype = jnp.dtype(config.param_dtype)
  keys = iter(jax.random.split(jax.random.key(cfg.seed), 2 * len(cfg.targets)))

  def make(path, shape):
    name = path[-1].key
    if name.endswith(B_SUFFIX):
      return jnp.zeros(shape, dtype)
    bound = 1.0 / math.sqrt(math.prod(shape[1:-1]))
    return jax.random.uniform(next(keys), shape, dtype, -bound, bound)

  adapters = jax.tree_util.tree_map_with_path(make, shapes, is_leaf=_is_shape)
  return adapters if mesh is None else place_adapters(adapters, config, cfg, mesh)


def place_adapters(adapters: dict, config: ModelConfig, cfg: LoRAConfig, mesh) -> dict:
  """`adapters` (arrays of `adapter_shapes`, e.g. read back from a checkpoint) on `mesh`, sharded
  by their logical axes (None: the default device). Raises naming the first adapter whose shape
  is not `cfg`'s."""
  shapes, logical = adapter_shapes(config, cfg)
  expected = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=_is_shape)[0]
  found = {jax.tree_util.keystr(k): np.shape(x)
           for k, x in jax.tree_util.tree_flatten_with_path(adapters)[0]}
  for key, shape in expected:
    name = jax.tree_util.keystr(key)
    got = found.pop(name, None)
    if got != shape:
      raise ValueError(f"LoRA adapter {name}: expected shape {shape} (rank {cfg.rank}, targets "
                       f"{list(cfg.targets)}), found {got or 'none'}")
  if found:
    raise ValueError(f"LoRA adapters {sorted(found)} are not among targets {list(cfg.targets)}")
  if mesh is None:
    return jax.device_put(adapters)
  shardings = jax.tree.map(lambda shape, names: sharding.named_sharding(mesh, names, shape),
                           shapes, logical, is_leaf=_is_shape)
  return jax.device_put(adapters, shardings)


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(s, int) for s in x)


def has_adapters(params) -> bool:
  """Whether `params` (a combined tree) holds adapters."""
  layers = params.get("layers", {}) if isinstance(params, dict) else {}
  return any(k.endswith(A_SUFFIX) for module in layers.values() if isinstance(module, dict)
             for k in module)


def combine(base: dict, adapters: dict, cfg: LoRAConfig) -> dict:
  """The base's leaves (the same arrays) plus the adapters, each B scaled by alpha / rank: what
  `decoder.forward` runs. Works on traced trees (inside a jitted loss)."""
  layers = dict(base["layers"])
  for module, leaves in adapters["layers"].items():
    merged = dict(layers[module])
    for key, x in leaves.items():
      merged[key] = x * jnp.asarray(cfg.scale, x.dtype) if key.endswith(B_SUFFIX) else x
    layers[module] = merged
  return dict(base, layers=layers)


def split(params: dict) -> tuple[dict, dict]:
  """(base, adapters as they sit in the combined tree: B already scaled) of a combined tree."""
  layers, adapters = {}, {}
  for module, leaves in params["layers"].items():
    if not isinstance(leaves, dict):
      layers[module] = leaves
      continue
    layers[module] = {k: v for k, v in leaves.items() if not k.endswith((A_SUFFIX, B_SUFFIX))}
    found = {k: v for k, v in leaves.items() if k.endswith((A_SUFFIX, B_SUFFIX))}
    if found:
      adapters[module] = found
  return dict(params, layers=layers), {"layers": adapters}


def merge(params: dict, dtype: Any = None) -> dict:
  """Plain params of a combined tree: W + (x A) B folded into W = W + A B (in float32, then
  `dtype`, default W's). Params without adapters come back unchanged."""
  if not has_adapters(params):
    return params
  base, adapters = split(params)
  layers = {k: dict(v) if isinstance(v, dict) else v for k, v in base["layers"].items()}
  for module, leaves in adapters["layers"].items():
    for key in leaves:
      if not key.endswith(A_SUFFIX):
        continue
      name = key[:-len(A_SUFFIX)]
      w, a, b = layers[module][name], leaves[key], leaves[name + B_SUFFIX]
      layers[module][name] = _merged_weight(w, a, b).astype(jnp.dtype(dtype or w.dtype))
  return dict(base, layers=layers)


@jax.jit
def _merged_weight(w, a, b):
  """W + A B in float32, for W [L, *in, *out], A [L, *in, r], B [L, r, *out]."""
  delta = jnp.einsum("lir,lro->lio", a.reshape(a.shape[0], -1, a.shape[-1]).astype(jnp.float32),
                     b.reshape(b.shape[0], b.shape[1], -1).astype(jnp.float32))
  return w.astype(jnp.float32) + delta.reshape(w.shape)


def cast_base(params: dict, dtype: str | None) -> dict:
  """`params` with matmul weights and embeddings in `dtype` (norm scales unchanged); None: as
  they are (the same arrays)."""
  if dtype is None:
    return params
  target = jnp.dtype(dtype)

  def cast(path, x):
    if getattr(path[-1], "key", None) == "scale" or x.dtype == target:
      return x
    return x.astype(target)

  return jax.tree_util.tree_map_with_path(cast, params)


@dataclasses.dataclass(frozen=True)
class Trainable:
  """What a driver trains: all of the policy's params, or LoRA adapters on a frozen base.

  params: the train state's initial params (the policy's, or fresh adapters).
  base: None (full fine-tuning), or the frozen base the adapted loss reads: pass it as
    `make_train_step(..., frozen=trainable.base)`; it is also the RL reference policy.
  cfg: the `LoRAConfig`, or None.
  """

  params: Any
  base: Any = None
  cfg: LoRAConfig | None = None

  def loss(self, loss_fn):
    """`loss_fn(params, batch, rng)` as the train step calls it: unchanged for full fine-tuning,
    else `(adapters, batch, rng, base) -> loss_fn(combine(base, adapters), batch, rng)`."""
    if self.cfg is None:
      return loss_fn
    cfg = self.cfg

    def adapter_loss(adapters, batch, rng, base):
      return loss_fn(combine(base, adapters, cfg), batch, rng)

    return adapter_loss

  def policy_params(self, train_params):
    """The policy's params for train-state params: the same, or base + adapters combined."""
    return train_params if self.cfg is None else combine(self.base, train_params, self.cfg)


def trainable(policy, cfg: LoRAConfig | None) -> Trainable:
  """The `Trainable` of `policy` under `cfg` (None: full fine-tuning). Adapters the policy already
  carries (from an earlier LoRA stage) are merged into its weights first: a stage trains either
  new adapters on them or all of them."""
  params = merge(policy.params)
  if cfg is None:
    return Trainable(params)
  return Trainable(init_adapters(policy.config, cfg, policy.mesh),
                   cast_base(params, cfg.base_dtype), cfg)


def full_finetuning(policy, cfg: LoRAConfig | None, what: str):
  """`policy` with any adapters merged into its weights, for an algorithm that trains all params;
  raises naming the algorithm when `cfg` asks it for LoRA."""
  if cfg is not None:
    raise ValueError(f"OptimizerConfig.lora is set but {what} does not train LoRA adapters "
                     "(supported: SFT, GRPO, START, Expert Iteration); unset it for this stage")
  return policy.replace(params=merge(policy.params))


# ------------------------------------------------------------------------------------------------
# PEFT adapter folders.


def peft_state(params: dict, config: ModelConfig, cfg: LoRAConfig) -> dict[str, np.ndarray]:
  """The adapters of a combined tree as PEFT's tensors: `base_model.model.model.layers.{i}.
  self_attn.q_proj.lora_A.weight` [r, in] and `...lora_B.weight` [out, r] (unscaled: PEFT
  multiplies by lora_alpha / r itself), float32."""
  _, adapters = split(params)
  out = {}
  for name in cfg.targets:
    module = TARGETS[name][0]
    a = np.asarray(jax.device_get(adapters["layers"][module][name + A_SUFFIX]), np.float32)
    b = np.asarray(jax.device_get(adapters["layers"][module][name + B_SUFFIX]), np.float32)
    for i in range(config.num_layers):
      prefix = f"base_model.model.model.layers.{i}.{_HF_MODULES[name]}"
      out[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, cfg.rank).T)
      out[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(
          (b[i].reshape(cfg.rank, -1) / cfg.scale).T)
  return out


def save_peft(policy, cfg: LoRAConfig, out_dir: str,
              base_model_name_or_path: str | None = None) -> None:
  """Writes the policy's adapters as a PEFT adapter folder: adapter_config.json and
  adapter_model.safetensors (`peft_state`), to load onto the Hugging Face export of the base."""
  if not has_adapters(policy.params):
    raise ValueError("save_peft: the policy's params hold no LoRA adapters (train a stage with "
                     "OptimizerConfig.lora set)")
  tensors = peft_state(policy.params, policy.config, cfg)
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"),
            metadata={"format": "pt"})
  adapter_config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.rank, "lora_alpha": cfg.alpha,
      "target_modules": list(cfg.targets), "lora_dropout": 0.0, "bias": "none",
      "fan_in_fan_out": False, "inference_mode": True,
      "base_model_name_or_path": base_model_name_or_path}
  with open(os.path.join(out_dir, "adapter_config.json"), "w", encoding="utf-8") as f:
    json.dump(adapter_config, f, indent=2)
    f.write("\n")

