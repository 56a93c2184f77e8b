"""Hugging Face import/export: config.json <-> `ModelConfig` (`rlthink.models.hf_config`, whose
functions this module re-exports), safetensors <-> the param tree.

Loading is tensor by tensor and shard by shard: every device's piece of a parameter is read from
the safetensors files (lazily, `get_slice`) by `jax.make_array_from_callback`, so no device ever
holds a whole sharded parameter. Layout: each `_Tensor` below says how one Hugging Face tensor
(per layer, where layers are stacked on our axis 0) maps onto one of our parameters: split its
dims into `groups` (e.g. q_proj.weight [H*D, E] -> (H, D), (E,)), then permute with `perm`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so safetensors can read BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from rlthink import distributed
from rlthink.files import default_mode
from rlthink.models import decoder, lora
from rlthink.models import tokenizer as tokenizers_lib
from rlthink.models.config import ModelConfig, eos_ids
from rlthink.models.hf_config import config_from_hf, config_to_hf, hf_eos
from rlthink.models.hub import resolve_model_dir
from rlthink.policy import Policy

__all__ = ["check_export_target", "config_from_hf", "config_to_hf", "load_pretrained",
           "read_config", "read_generation_config", "save_pretrained"]
_log = logging.getLogger(__name__)
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_SINGLE, _INDEX = "model.safetensors", "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class _Tensor:
  name: str                         # Hugging Face name; "{}" stands for the layer index
  groups: tuple[tuple[int, ...], ...]  # HF dim i = prod(groups[i]) split into these sizes
  perm: tuple[int, ...]             # our axis i = split axis perm[i]

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return tuple(math.prod(g) for g in self.groups)

  @property
  def split(self) -> tuple[int, ...]:
    return tuple(s for g in self.groups for s in g)


def tensor_map(config: ModelConfig) -> dict[tuple[str, ...], _Tensor]:
  """{our param path: its Hugging Face tensor} for `config` (paths under "layers" are per layer)."""
  e, h, kv, d = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
  m, v, layer = config.intermediate_size, config.vocab_size, "model.layers.{}."
  out = {
      ("embedding",): _Tensor("model.embed_tokens.weight", ((v,), (e,)), (0, 1)),
      ("final_norm", "scale"): _Tensor("model.norm.weight", ((e,),), (0,)),
      ("layers", "input_norm", "scale"): _Tensor(layer + "input_layernorm.weight", ((e,),), (0,)),
      ("layers", "post_attn_norm", "scale"):
          _Tensor(layer + "post_attention_layernorm.weight", ((e,),), (0,)),
      ("layers", "attn", "o_proj"): _Tensor(layer + "self_attn.o_proj.weight", ((e,), (h, d)),
                                            (1, 2, 0)),
      ("layers", "mlp", "gate_proj"): _Tensor(layer + "mlp.gate_proj.weight", ((m,), (e,)), (1, 0)),
      ("layers", "mlp", "up_proj"): _Tensor(layer + "mlp.up_proj.weight", ((m,), (e,)), (1, 0)),
      ("layers", "mlp", "down_proj"): _Tensor(layer + "mlp.down_proj.weight", ((e,), (m,)), (1, 0)),
  }
  for name, heads in (("q", h), ("k", kv), ("v", kv)):
    out[("layers", "attn", f"{name}_proj")] = _Tensor(
        layer + f"self_attn.{name}_proj.weight", ((heads, d), (e,)), (2, 0, 1))
    if config.qkv_bias:
      out[("layers", "attn", f"{name}_bias")] = _Tensor(
          layer + f"self_attn.{name}_proj.bias", ((heads, d),), (0, 1))
  if config.o_bias:
    out[("layers", "attn", "o_bias")] = _Tensor(layer + "self_attn.o_proj.bias", ((e,),), (0,))
  if config.qk_norm:
    for name in ("q", "k"):
      out[("layers", "attn", f"{name}_norm", "scale")] = _Tensor(
          layer + f"self_attn.{name}_norm.weight", ((d,),), (0,))
  if not config.tie_embeddings:
    out[("lm_head",)] = _Tensor("lm_head.weight", ((v,), (e,)), (1, 0))
  return out


class _Checkpoint:
  """The safetensors files of a directory, opened lazily: tensor name -> file -> get_slice."""

  def __init__(self, path: str, stack: contextlib.ExitStack):
    self.path, self._stack, self._handles = path, stack, {}
    index_file, single = os.path.join(path, _INDEX), os.path.join(path, _SINGLE)
    if os.path.isfile(index_file):
      try:
        with open(index_file) as f:
          self.weight_map = dict(json.load(f)["weight_map"])
      except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index_file} is not a valid safetensors index (it needs a "
                         f"'weight_map' of tensor name -> file): {e}") from e
    elif os.path.isfile(single):
      self.weight_map = {name: _SINGLE for name in self._open(_SINGLE).keys()}
    else:
      found = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".safetensors", ".pt")))
      raise FileNotFoundError(f"{path} has no {_SINGLE} or {_INDEX}"
                              + (f" (found {found}; only safetensors are read)" if found else ""))

  def _open(self, file: str):
    if file not in self._handles:
      full = os.path.join(self.path, file)
      if not os.path.isfile(full):
        raise FileNotFoundError(f"{full} is missing (named by {_INDEX})")
      try:
        self._handles[file] = self._stack.enter_context(safe_open(full, framework="numpy"))
      except Exception as e:  # SafetensorError and friends: one message naming the file
        raise ValueError(f"{full} is not a readable safetensors file: {e}") from e
    return self._handles[file]

  def check(self, name: str, shape: tuple[int, ...]) -> None:
    """Raises when tensor `name` is missing, not floating point or not of `shape`."""
    if name not in self.weight_map:
      raise ValueError(f"tensor {name} is missing from the checkpoint in {self.path}")
    file = self.weight_map[name]
    try:
      piece = self._open(file).get_slice(name)
    except (ValueError, FileNotFoundError):
      raise
    except Exception as e:
      raise ValueError(f"tensor {name} is missing from {os.path.join(self.path, file)}: {e}") from e
    found, dtype = tuple(piece.get_shape()), piece.get_dtype()
    if found != shape:
      raise ValueError(f"tensor {name} in {os.path.join(self.path, file)} has shape "
                       f"{list(found)}, expected {list(shape)} from config.json")
    if dtype not in _FLOAT_DTYPES:
      raise ValueError(f"tensor {name} in {os.path.join(self.path, file)} has dtype {dtype}, "
                       f"expected one of {sorted(_FLOAT_DTYPES)}")

  def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
    return self._open(self.weight_map[name]).get_slice(name)[index]


def _read_piece(ckpt: _Checkpoint, name: str, t: _Tensor, index: tuple[slice, ...]) -> np.ndarray:
  """Our-layout piece `index` of tensor `name`, reading only the rows/columns it covers."""
  split_index = [slice(None)] * len(t.split)
  for ours, axis in enumerate(t.perm):
    split_index[axis] = index[ours]
  hf_index, sub_shape, inner_index, a = [], [], [], 0
  for group in t.groups:
    # A group (outer, inner...) is contiguous in the HF dim: read whole `inner` blocks of the
    # outer range, then cut the inner dims in memory (they are never sharded in practice).
    start, stop, step = split_index[a].indices(group[0])
    assert step == 1, "shards are contiguous"
    block = math.prod(group[1:])
    hf_index.append(slice(start * block, stop * block))
    sub_shape += [stop - start, *group[1:]]
    inner_index += [slice(None), *split_index[a + 1:a + len(group)]]
    a += len(group)
  x = ckpt.read(name, tuple(hf_index)).reshape(sub_shape)[tuple(inner_index)]
  return np.transpose(x, t.perm)


def _load_param(ckpt, t: _Tensor, layered: bool, num_layers: int, shape, sharding, dtype):
  cache = {}  # replicated shards are read once, not once per device

  def piece(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple(s.indices(n) for s, n in zip(index, shape))
    if key not in cache:
      if layered:
        layers = range(num_layers)[index[0]]
        x = np.stack([_read_piece(ckpt, t.name.format(i), t, index[1:]) for i in layers])
      else:
        x = _read_piece(ckpt, t.name, t, index)
      cache[key] = np.ascontiguousarray(x.astype(dtype))
    return cache[key]

  return jax.make_array_from_callback(tuple(shape), sharding, piece)


def _flat(tree) -> dict[tuple[str, ...], Any]:
  return {tuple(k.key for k in p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _read_json(file: str) -> dict:
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{file} is missing: not a Hugging Face model directory")
  try:
    with open(file) as f:
      return json.load(f)
  except ValueError as e:
    raise ValueError(f"{file} is not valid JSON: {e}") from e


def read_generation_config(path: str | os.PathLike) -> dict | None:
  """The generation_config.json of a model directory (or cached Hub id), None when it has none."""
  file = os.path.join(resolve_model_dir(path), "generation_config.json")
  return _read_json(file) if os.path.isfile(file) else None


def read_config(path: str | os.PathLike) -> ModelConfig:
  """The ModelConfig of a Hugging Face model directory (or a Hub id in the local cache, see
  `rlthink.models.hub`), from its config.json alone. Its eos ids are those of config.json and
  generation_config.json together (transformers' generate stops on the latter's)."""
  path = resolve_model_dir(path)
  config_file = os.path.join(path, "config.json")
  config = config_from_hf(_read_json(config_file), config_file)
  generation = read_generation_config(path) or {}
  extra = [i for i in eos_ids(generation.get("eos_token_id")) if i not in config.eos_token_id]
  return config.replace(eos_token_id=config.eos_token_id + tuple(extra)) if extra else config


def load_pretrained(path: str | os.PathLike, mesh: jax.sharding.Mesh | None = None,
                    dtype: str | None = None, **overrides):
  """Loads a local Hugging Face directory into a `Policy`, each parameter straight into its
  sharding on `mesh` (default device when None).

  Args:
    path: directory with config.json and model.safetensors (or model.safetensors.index.json and its
      shards), plus tokenizer files, which are attached when present; or a Hub id already in the
      local Hugging Face cache (`rlthink.models.hub.resolve_model_dir`).
    dtype: compute dtype (ModelConfig.dtype; default "float32"). Parameters are stored in
      `param_dtype` (default float32) whatever the checkpoint's dtype.
    overrides: other ModelConfig fields to replace (e.g. max_seq_len=4096, remat=True).
  """
  path = resolve_model_dir(path)
  config = read_config(path)
  if dtype is not None:
    overrides["dtype"] = dtype
  config = config.replace(**overrides) if overrides else config
  tok = tokenizers_lib.load_tokenizer(path) if tokenizers_lib.has_tokenizer_files(path) else None
  if tok is not None and len(tok) > config.vocab_size:
    raise ValueError(f"the tokenizer in {path} has {len(tok)} tokens, more than vocab_size="
                     f"{config.vocab_size} in {os.path.join(path, 'config.json')}")

  shapes, _ = decoder.abstract_params(config)
  flat_shapes = _flat(shapes)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    flat_shardings = {p: device for p in flat_shapes}
  else:
    flat_shardings = _flat(decoder.param_shardings(config, mesh))
  tensors = tensor_map(config)
  assert set(tensors) == set(flat_shapes), (sorted(tensors), sorted(flat_shapes))

  params: dict[str, Any] = {}
  with contextlib.ExitStack() as stack:
    ckpt = _Checkpoint(path, stack)
    needed = set()
    for p, t in tensors.items():  # validate everything before reading anything
      names = [t.name.format(i) for i in range(config.num_layers)] if p[0] == "layers" else [t.name]
      for name in names:
        ckpt.check(name, t.hf_shape)
      needed.update(names)
    unused = sorted(n for n in set(ckpt.weight_map) - needed if "rotary_emb.inv_freq" not in n)
    if unused:
      _log.warning("%s: %d checkpoint tensors are not used by the %s model, e.g. %s", path,
                   len(unused), config.architecture, unused[:5])
    for p, t in tensors.items():
      _set(params, p, _load_param(ckpt, t, p[0] == "layers", config.num_layers,
                                  flat_shapes[p].shape, flat_shardings[p],
                                  np.dtype(config.param_dtype)))
  return Policy(config=config, params=params, mesh=mesh, tokenizer=tok)


# ------------------------------------------------------------------------------------------------
# Export.


def _export_plan(config: ModelConfig) -> list[tuple[tuple[str, ...], _Tensor, int | None]]:
  """(our param path, its _Tensor, layer index or None) of every tensor to write, in file order.

  The exported architecture may carry biases ours lacks (Qwen2 always has q/k/v biases; Llama's
  attention_bias covers q/k/v and o); those are written as zeros, which is exact.
  """
  exported = config_from_hf(config_to_hf(config), "<export>")
  return [(p, t, i) for p, t in tensor_map(exported).items()
          for i in (range(config.num_layers) if p[0] == "layers" else [None])]


def _hf_tensor(params: dict, path: tuple[str, ...], t: _Tensor, layer: int | None,
               dtype: np.dtype) -> np.ndarray:
  """One Hugging Face tensor, gathered to host from our (possibly sharded) param."""
  if path not in params:
    assert path[-1].endswith("bias"), path
    return np.zeros(t.hf_shape, dtype)
  x = distributed.to_host(params[path] if layer is None else params[path][layer])
  return np.ascontiguousarray(np.transpose(x, np.argsort(t.perm)).reshape(t.hf_shape).astype(dtype))


def check_export_target(out_dir: str | os.PathLike, overwrite: bool = False) -> str:
  """The absolute `out_dir` if an export may write it: it does not exist, is an empty directory,
  or (with `overwrite`) holds an earlier export (config.json). Raises FileExistsError otherwise,
  before anything is computed or written."""
  out_dir = os.path.abspath(os.fspath(out_dir))
  if not os.path.exists(out_dir):
    return out_dir
  if not os.path.isdir(out_dir):
    raise FileExistsError(f"{out_dir} exists and is a file; refusing to replace it")
  entries = sorted(os.listdir(out_dir))
  if not entries:
    return out_dir
  if not os.path.isfile(os.path.join(out_dir, "config.json")):
    raise FileExistsError(f"{out_dir} exists and is not a model directory (no config.json; "
                          f"{len(entries)} entries, e.g. {entries[0]!r}); refusing to replace it")
  if not overwrite:
    raise FileExistsError(f"{out_dir} is not empty ({len(entries)} entries); pass overwrite=True "
                          "(rlthink convert --overwrite) to replace it as a whole, or choose "
                          "another directory")
  return out_dir


def save_pretrained(policy, out_dir: str | os.PathLike, dtype: str | None = None,
                    max_shard_bytes: int = 5 * 2**30, overwrite: bool = False,
                    generation_config: dict | None = None) -> None:
  """Writes `policy` as a Hugging Face directory that `transformers` loads.

  Files: config.json, generation_config.json, model.safetensors (or numbered shards plus
  model.safetensors.index.json beyond `max_shard_bytes`) and the tokenizer when one is attached.
  Everything is written into a temporary directory beside `out_dir`, which then replaces `out_dir`
  as a whole; a failure leaves `out_dir` as it was. A non-empty `out_dir` is refused unless
  `overwrite` and it holds an earlier export (see `check_export_target`): files in it are not
  kept. The directory and files get the usual permissions (umask). Value/reward heads are not
  part of a causal LM and are left out (with a warning). LoRA adapters are merged into their
  weights (`rlthink.models.lora.merge`; `lora.save_peft` writes them alone).

  Args:
    dtype: tensor dtype in the files (e.g. "bfloat16"); default: the params' dtype.
    generation_config: the source model's generation_config.json (`read_generation_config`),
      carried over (sampling defaults and all); its bos/eos/pad ids are the config's.
  """
  config = policy.config
  dtype = np.dtype(dtype or config.param_dtype)
  out_dir = check_export_target(out_dir, overwrite)
  policy = policy.replace(params=lora.merge(policy.params))  # LoRA adapters folded in
  dropped = sorted(k for k in policy.params if k.startswith(("value_", "reward_")))
  if dropped:
    _log.warning("save_pretrained(%s): not exporting %s (no place in a causal LM)", out_dir,
                 dropped)
  hf_config = dict(config_to_hf(config), dtype=dtype.name, torch_dtype=dtype.name)

  # Plan the shards up front so every file name (model-0000i-of-0000n) is known.
  shards, size = [[]], 0
  for item in _export_plan(config):
    nbytes = math.prod(item[1].hf_shape) * dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards, size = shards + [[]], 0
    shards[-1].append(item)
    size += nbytes
  files = ([_SINGLE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  params = _flat(policy.params)

  writer = jax.process_index() == 0  # every process joins the gathers; one writes
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = None
  if writer:
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
  try:
    weight_map, total = {}, 0
    for file, items in zip(files, shards):
      chunk = {t.name.format(i): _hf_tensor(params, p, t, i, dtype) for p, t, i in items}
      weight_map.update(dict.fromkeys(chunk, file))
      total += sum(x.nbytes for x in chunk.values())
      if writer:
        save_file(chunk, os.path.join(tmp, file), metadata={"format": "pt"})
    if not writer:
      return
    if len(files) > 1:
      _write_json(os.path.join(tmp, _INDEX), {"metadata": {"total_size": total},
                                               "weight_map": weight_map})
    _write_json(os.path.join(tmp, "config.json"), hf_config)
    specials = {"bos_token_id": config.bos_token_id, "eos_token_id": hf_eos(config.eos_token_id),
                "pad_token_id": config.pad_token_id}
    generation = dict(generation_config or {})
    generation.update({k: v for k, v in specials.items() if v is not None})
    _write_json(os.path.join(tmp, "generation_config.json"), generation)
    if policy.tokenizer is not None:
      policy.tokenizer.save_pretrained(tmp)
    _normal_permissions(tmp)
    _replace_dir(tmp, out_dir)
  finally:
    if tmp is not None and os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def _normal_permissions(directory: str) -> None:
  """What plain open()/mkdir give under the umask (safetensors and mkdtemp make owner-only)."""
  os.chmod(directory, default_mode(directory=True))
  for root, dirs, files in os.walk(directory):
    for name in dirs:
      os.chmod(os.path.join(root, name), default_mode(directory=True))
    for name in files:
      os.chmod(os.path.join(root, name), default_mode())


def _write_json(file: str, obj: dict) -> None:
  with open(file, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


def _replace_dir(new: str, out_dir: str) -> None:
  """Moves `new` to `out_dir`, swapping out an existing directory only once `new` is complete."""
  if not os.path.exists(out_dir):
    os.rename(new, out_dir)
    return
  old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
  os.rmdir(old)
  os.rename(out_dir, old)
  try:
    os.rename(new, out_dir)
  except BaseException:
    os.rename(old, out_dir)
    raise
  shutil.rmtree(old, ignore_errors=True)
