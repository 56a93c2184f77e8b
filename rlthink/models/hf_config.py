"""Hugging Face config.json <-> `ModelConfig` (read by `rlthink.models.hf`, which re-exports
both functions).

Supported: LlamaForCausalLM (Llama 2/3/3.1/3.2, SmolLM; RoPE "default", "linear", "llama3"),
MistralForCausalLM (sliding window), Qwen2ForCausalLM (q/k/v bias) and Qwen3ForCausalLM (q/k norm).
Both config styles are read: transformers 5's `rope_parameters` and the older `rope_theta` +
`rope_scaling`; exports write both. Keys a config.json leaves out take the defaults of
transformers' config classes.
"""

from __future__ import annotations

import json
import os

from rlthink.models.config import ROPE_TYPES, ModelConfig

__all__ = ["config_from_hf", "config_to_hf", "hf_eos"]

_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                  "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")
# What transformers' config classes assume for keys a config.json leaves out.
_COMMON = dict(hidden_act="silu", rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
               attention_bias=False, mlp_bias=False, use_sliding_window=False, head_dim=None,
               bos_token_id=None, eos_token_id=None, pad_token_id=None)
_DEFAULTS = {
    "llama": dict(max_position_embeddings=2048, num_key_value_heads=None, bos_token_id=1,
                  eos_token_id=2),
    "mistral": dict(max_position_embeddings=131072, num_key_value_heads=8, bos_token_id=1,
                    eos_token_id=2, sliding_window=4096),
    "qwen2": dict(max_position_embeddings=32768, num_key_value_heads=32),
    "qwen3": dict(max_position_embeddings=32768, num_key_value_heads=32, head_dim=128),
}


def _rope_from_hf(hf: dict, fail) -> dict:
  """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or `rope_theta` +
  `rope_scaling` (older configs); `rope_parameters` wins when both are there, as in transformers."""
  key = "rope_parameters" if hf.get("rope_parameters") is not None else "rope_scaling"
  params = dict(hf.get(key) or {})
  if params and all(isinstance(v, dict) for v in params.values()):  # one dict per layer type
    if len({json.dumps(v, sort_keys=True) for v in params.values()}) != 1:
      fail(f"{key} with a different RoPE per layer type is not supported")
    params = next(iter(params.values()))
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type not in ROPE_TYPES:
    fail(f"{key}.rope_type={rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
  partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor")) or 1.0
  if partial != 1.0:
    fail(f"partial_rotary_factor={partial!r} is not supported (only 1.0)")
  theta = params.get("rope_theta", hf.get("rope_theta"))
  out = dict(rope_theta=float(10000.0 if theta is None else theta), rope_type=rope_type)
  needs = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}
  for name in needs.get(rope_type, ()):
    if params.get(name) is None:
      fail(f"{key} of rope_type {rope_type!r} needs {name!r}")
  if rope_type != "default":
    out["rope_factor"] = float(params["factor"])
  if rope_type == "llama3":
    out.update(rope_low_freq_factor=float(params["low_freq_factor"]),
               rope_high_freq_factor=float(params["high_freq_factor"]),
               rope_original_max_position=int(params.get("original_max_position_embeddings")
                                              or hf["max_position_embeddings"]))
  return out


def config_from_hf(hf_config: dict, path: str | os.PathLike = "config.json") -> ModelConfig:
  """The ModelConfig of a Hugging Face config.json dict.

  Raises ValueError naming `path` and the offending key for anything the decoder cannot run
  exactly: other architectures, a non-SiLU MLP, mlp_bias, RoPE types other than default / linear /
  llama3, partial rotary, sliding windows in Qwen, quantized weights. Every eos id of a list is
  kept.
  """
  def fail(msg: str):
    raise ValueError(f"{os.fspath(path)}: {msg}")

  names, model_type = hf_config.get("architectures") or [], hf_config.get("model_type")
  if names:
    if len(names) != 1 or names[0] not in _ARCHITECTURES:
      fail(f"architectures={names!r} is not supported (supported: {sorted(_ARCHITECTURES)})")
    arch = _ARCHITECTURES[names[0]]
  elif model_type in _DEFAULTS:
    arch = model_type
  else:
    fail(f"no supported architectures / model_type (got model_type={model_type!r}); supported: "
         f"{sorted(_ARCHITECTURES)}")
  missing = [k for k in _REQUIRED if k not in hf_config]
  if missing:
    fail(f"missing required keys {missing}")
  hf = {**_COMMON, **_DEFAULTS[arch], **hf_config}
  if hf["hidden_act"] not in ("silu", "swish"):
    fail(f"hidden_act={hf['hidden_act']!r} is not supported (only 'silu')")
  if hf["mlp_bias"]:
    fail(f"mlp_bias={hf['mlp_bias']!r} is not supported (MLP projections have no bias)")
  if hf.get("quantization_config"):
    fail("quantization_config: quantized checkpoints are not supported")
  window = hf.get("sliding_window") if arch == "mistral" else None
  if arch in ("qwen2", "qwen3") and hf["use_sliding_window"] and hf.get("sliding_window"):
    # As transformers: layers from max_window_layers on (or those layer_types names) slide.
    first = hf.get("max_window_layers", 28)
    types = hf.get("layer_types") or ["sliding_attention" if i >= first else "full_attention"
                                      for i in range(hf["num_hidden_layers"])]
    if "sliding_attention" in types:
      fail(f"use_sliding_window=True: sliding-window layers in {arch} are not supported")
  rope = _rope_from_hf(hf, fail)
  heads = hf["num_attention_heads"]
  bias = bool(hf["attention_bias"])
  qkv_bias, o_bias = {"llama": (bias, bias), "qwen3": (bias, bias), "mistral": (False, False),
                      "qwen2": (True, False)}[arch]
  try:
    return ModelConfig(
        architecture=arch, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, num_kv_heads=hf["num_key_value_heads"] or heads,
        head_dim=hf["head_dim"] or hf["hidden_size"] // heads,
        rms_norm_eps=float(hf["rms_norm_eps"]),
        tie_embeddings=bool(hf["tie_word_embeddings"]), qkv_bias=qkv_bias, o_bias=o_bias,
        qk_norm=arch == "qwen3", sliding_window=window, max_seq_len=hf["max_position_embeddings"],
        bos_token_id=hf["bos_token_id"], eos_token_id=hf["eos_token_id"],
        pad_token_id=hf["pad_token_id"],
        **rope)
  except (ValueError, TypeError) as e:
    fail(str(e))


def config_to_hf(config: ModelConfig) -> dict:
  """The config.json dict (without dtype) of `config`, in its architecture's format.

  Raises ValueError when the architecture cannot express the config (e.g. a Mistral with biases,
  a Qwen3 without q/k norm, a sliding window outside Mistral).
  """
  arch = config.architecture
  hf_name = {v: k for k, v in _ARCHITECTURES.items()}[arch]

  def need(ok: bool, what: str):
    if not ok:
      raise ValueError(f"cannot export this config as {hf_name}: {what}")

  need(config.qk_norm == (arch == "qwen3"), f"qk_norm={config.qk_norm} (only Qwen3 has q/k norm)")
  need(arch != "mistral" or not (config.qkv_bias or config.o_bias), "Mistral has no biases")
  need(arch != "qwen2" or not config.o_bias, "Qwen2 has no o_proj bias")
  need(arch == "mistral" or config.sliding_window is None,
       f"sliding_window={config.sliding_window} (only exported for Mistral)")
  rope = {"rope_type": config.rope_type}
  if config.rope_type != "default":
    rope["factor"] = config.rope_factor
  if config.rope_type == "llama3":
    rope.update(low_freq_factor=config.rope_low_freq_factor,
                high_freq_factor=config.rope_high_freq_factor,
                original_max_position_embeddings=config.rope_original_max_position)
  out = dict(
      architectures=[hf_name], model_type=arch, vocab_size=config.vocab_size,
      hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, hidden_act="silu",
      max_position_embeddings=config.max_seq_len, rms_norm_eps=config.rms_norm_eps,
      tie_word_embeddings=config.tie_embeddings, bos_token_id=config.bos_token_id,
      eos_token_id=hf_eos(config.eos_token_id), pad_token_id=config.pad_token_id,
      attention_dropout=0.0, initializer_range=0.02, use_cache=True,
      # transformers 5 reads rope_parameters; older versions rope_theta + rope_scaling.
      rope_parameters=dict(rope, rope_theta=config.rope_theta), rope_theta=config.rope_theta,
      rope_scaling=None if config.rope_type == "default" else rope)
  if arch in ("llama", "qwen3"):
    out["attention_bias"] = config.qkv_bias or config.o_bias
  if arch == "llama":
    out["mlp_bias"] = False
  if arch == "mistral":
    out["sliding_window"] = config.sliding_window
  if arch in ("qwen2", "qwen3"):
    out.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.num_layers)
  return out


def hf_eos(ids: tuple[int, ...]) -> int | list[int] | None:
  """`eos_token_id` as Hugging Face files write it: one id as an int, several as a list."""
  return None if not ids else ids[0] if len(ids) == 1 else list(ids)
