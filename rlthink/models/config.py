"""The model configuration: one frozen, hashable dataclass that names a decoder's shape.

`ModelConfig` is static under `jax.jit` (it is hashed into the compilation cache), so every field is
an immutable value: ints, floats, strings, bools or tuples.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a decoder-only transformer (Llama / Mistral / Qwen2 / Qwen3 family).

  Attributes:
    architecture: one of `ARCHITECTURES`; it decides the Hugging Face export format.
    vocab_size: number of token ids.
    hidden_size: width of the residual stream (logical axis `embed`).
    intermediate_size: width of the gated MLP (logical axis `mlp`).
    num_layers: number of decoder layers; they are compiled as one scanned layer.
    num_heads: query heads; num_kv_heads: key/value heads (GQA when fewer).
    head_dim: per-head width; defaults to hidden_size // num_heads.
    rope_theta: RoPE base; rope_type / rope_factor / rope_low_freq_factor / rope_high_freq_factor /
      rope_original_max_position: RoPE scaling ("default": none; "linear"; "llama3").
    rms_norm_eps: epsilon of every RMSNorm.
    tie_embeddings: share the input embedding with the output projection.
    qkv_bias: biases on q/k/v projections (Qwen2); o_bias: bias on the output projection.
    qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3).
    sliding_window: attend only to the last `sliding_window` positions (Mistral); None for full.
    max_seq_len: the longest sequence the model is used with (KV caches are at most this long).
    dtype: compute dtype of matmuls and activations; param_dtype: master parameter dtype.
    attention_impl: "xla" (portable einsum attention) or "cudnn" (fused flash attention on NVIDIA
      GPUs, used for full causal forwards without a cache or packing; XLA otherwise).
    remat: rematerialize each layer in the backward pass (less memory, ~1/3 more compute).
    scan_unroll: layers per iteration of the scanned layer stack (1: a loop of num_layers
      iterations; 0 or num_layers: fully unrolled, which lets XLA schedule across layers at the
      cost of compile time). Numerics and parameters are the same for every value.
    bos_token_id / pad_token_id: special ids carried into Hugging Face exports.
    eos_token_id: every id that ends a completion (a tuple; an int or None is accepted, as in
      configs and checkpoints written before it became a tuple); sampling stops on any of them and
      exports write them all.
  """

  architecture: str = "llama"
  vocab_size: int = 256
  hidden_size: int = 128
  intermediate_size: int = 384
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_position: int = 8192
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False
  o_bias: bool = False
  qk_norm: bool = False
  sliding_window: int | None = None
  max_seq_len: int = 2048
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "xla"
  remat: bool = False
  scan_unroll: int = 1
  bos_token_id: int | None = None
  eos_token_id: tuple[int, ...] = ()
  pad_token_id: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "eos_token_id", eos_ids(self.eos_token_id))
    if self.head_dim is None:
      object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_heads, 1))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    def need(cond: bool, msg: str):
      if not cond:
        raise ValueError(f"ModelConfig: {msg}")

    need(self.architecture in ARCHITECTURES,
         f"architecture={self.architecture!r} is not one of {ARCHITECTURES}")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "max_seq_len"):
      value = getattr(self, name)
      need(isinstance(value, int) and value > 0, f"{name}={value!r} must be a positive int")
    need(self.num_heads % self.num_kv_heads == 0,
         f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    need(self.head_dim % 2 == 0, f"head_dim={self.head_dim} must be even for RoPE")
    need(self.rope_type in ROPE_TYPES, f"rope_type={self.rope_type!r} is not one of {ROPE_TYPES}")
    need(self.dtype in DTYPES, f"dtype={self.dtype!r} is not one of {DTYPES}")
    need(self.param_dtype in DTYPES, f"param_dtype={self.param_dtype!r} is not one of {DTYPES}")
    need(self.attention_impl in ATTENTION_IMPLS,
         f"attention_impl={self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    need(isinstance(self.scan_unroll, int) and self.scan_unroll >= 0,
         f"scan_unroll={self.scan_unroll!r} must be an int >= 0")
    need(self.sliding_window is None or self.sliding_window > 0,
         f"sliding_window={self.sliding_window!r} must be None or positive")

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @property
  def layer_params(self) -> int:
    """Parameters of one decoder layer."""
    e, h, kv, d, m = (self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim,
                      self.intermediate_size)
    attn = e * h * d + 2 * e * kv * d + h * d * e
    if self.qkv_bias:
      attn += h * d + 2 * kv * d
    if self.o_bias:
      attn += e
    if self.qk_norm:
      attn += 2 * d
    return attn + 3 * e * m + 2 * e

  @property
  def num_params(self) -> int:
    """Parameter count of the policy (trunk + logits head)."""
    embed = self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
    return self.num_layers * self.layer_params + embed + self.hidden_size

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward, the PaLM way: 6 * (matmul params) plus
    12 * layers * heads * head_dim * seq_len for attention (not halved for causality)."""
    matmul_params = self.num_layers * self.layer_params + self.vocab_size * self.hidden_size
    return 6.0 * matmul_params + 12.0 * self.num_layers * self.num_heads * self.head_dim * seq_len


def eos_ids(value: Any) -> tuple[int, ...]:
  """`eos_token_id` as a tuple of ids: None -> (), 7 -> (7,), [7, 8] -> (7, 8) (the forms that
  Hugging Face configs and older rlthink configs and checkpoints hold)."""
  if value is None:
    return ()
  ids = tuple(value) if isinstance(value, (list, tuple)) else (value,)
  if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in ids):
    raise ValueError(f"ModelConfig: eos_token_id={value!r} must be an id, a list of ids or None")
  return tuple(int(i) for i in ids)
