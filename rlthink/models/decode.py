"""The sampler's decode step: the weight layout it reads and the kernels it dispatches to.

`rlthink.sample` runs the decoder's own modules (`decoder.forward`, same numbers) on parameters
laid out for decoding in two steps (`rlthink.sampling.engine.params_for_sampling` takes both):

- `unstack_layers`: the stacked `layers` split into `layers_0` .. `layers_{L-1}`, so the layers run
  unrolled and no matmul in the decode loop reads a slice of a stacked array;
- `transpose_for_decode`: every layer matmul weight stored input axis minor (`q_proj` [E, H, D]
  -> `q_proj_t` [H, D, E], ...), optionally with q/k/v and gate/up each fused into one weight.
  With one row per step a matmul is a reduction over the weight's input axis; with that axis
  minor it is a row reduction, 1.3-1.7x faster per call than over [in, out] (H200, qwen2.5-0.5b
  attention and down projections).

With `forward(..., decode_kernel=True)` (GPU; Pallas' interpreter elsewhere) one-token steps of
unrolled layers attend through `decode_attention` (`kernel_attention`): it reads only the filled
slots, adds q's bias and applies its RoPE and, given the fused q/k/v projection, also biases,
rotates and writes the step's keys and values into the cache. With one row per device and the
fused weights, a whole layer runs as `few_rows_step`: the q/k/v and gate/up (and large down)
matmuls as `decode_matvec` kernels with the residual adds, RMSNorms and SiLU-multiply fused in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlthink.models import decode_attention, decode_matvec
from rlthink.models.attention import AttentionContext, LayerCache, rope_inv_freq, rope_tables
from rlthink.models.config import ModelConfig

# Layer weights stored transposed for decoding: name -> (einsum of x with the stored weight,
# the axes `transpose_for_decode` permutes the weight by). `decoder` reads either form.
TRANSPOSED: dict[str, tuple[str, tuple[int, ...]]] = {
    "q_proj": ("bte,hde->bthd", (1, 2, 0)),
    "k_proj": ("bte,hde->bthd", (1, 2, 0)),
    "v_proj": ("bte,hde->bthd", (1, 2, 0)),
    "o_proj": ("bthd,ehd->bte", (2, 0, 1)),
    "gate_proj": ("bte,me->btm", (1, 0)),
    "up_proj": ("bte,me->btm", (1, 0)),
    "down_proj": ("btm,em->bte", (1, 0)),
}
T_SUFFIX = "_t"


def unstack_layers(params):
  """The same parameters with the stacked `layers` split into `layers_0`, ..., `layers_{L-1}`:
  `decoder.forward` then runs the layers unrolled, each reading its own weight (and cache)
  buffers. Compiles L layer bodies instead of one; the sampler's decode loop uses it."""
  layers = params["layers"]
  num_layers = jax.tree.leaves(layers)[0].shape[0]
  rest = {k: v for k, v in params.items() if k != "layers"}
  return {**rest, **{f"layers_{i}": jax.tree.map(lambda p, i=i: p[i], layers)
                     for i in range(num_layers)}}


def transpose_for_decode(params, fuse: bool = False):
  """Unrolled (`unstack_layers`) params with every layer matmul weight stored transposed, input
  axis minor (`q_proj` [E, H, D] -> `q_proj_t` [H, D, E], ...): `decoder.forward` reads either.

  fuse: also concatenate the weights that read the same input, so each is one matmul (one kernel
  at batch 1): `qkv_proj_t` [H + 2K, D, E] (and `qkv_bias` [H + 2K, D]) for q/k/v, and
  `gate_up_proj_t` [2, M, E] for the MLP's gate and up. Only for weights whose head / mlp axes are
  not sharded (the split of the fused output would move data between devices). Measured on an
  H200: qwen2.5-0.5b decoding 1.16x faster at batch 1, 1.06x at batch 256.
  """
  def layer(tree):
    out = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        out[key] = layer(value)
      elif key in TRANSPOSED:
        out[key + T_SUFFIX] = jnp.transpose(value, TRANSPOSED[key][1])
      else:
        out[key] = value
    if fuse and "q_proj_t" in out:
      out["qkv_proj_t"] = jnp.concatenate([out.pop(f"{n}_proj_t") for n in "qkv"], axis=0)
      if "q_bias" in out:
        out["qkv_bias"] = jnp.concatenate([out.pop(f"{n}_bias") for n in "qkv"], axis=0)
    if fuse and "gate_proj_t" in out:
      out["gate_up_proj_t"] = jnp.stack([out.pop("gate_proj_t"), out.pop("up_proj_t")])
    return out
  if "layers" in params:
    raise ValueError("transpose_for_decode takes unstack_layers params")
  return {k: layer(v) if k.startswith("layers_") else v for k, v in params.items()}


def uses_kernel(decode_kernel: bool, x: jax.Array, layer_cache: LayerCache | None) -> bool:
  """Whether this attention call takes the Pallas decode kernel: asked for, one token per row,
  per-layer cache buffers (unrolled layers)."""
  return (decode_kernel and layer_cache is not None and layer_cache.layer is None
          and x.shape[1] == 1)


def kernel_rope(positions: jax.Array, ctx: AttentionContext, inv_freq: np.ndarray):
  """The decode kernel's RoPE tables ((cos, sin) [B, D], both halves) and each row's cache
  length after this step."""
  cos, sin = rope_tables(positions[:, 0], inv_freq)  # the same in every layer: CSE'd
  rope = (jnp.concatenate([cos, cos], -1), jnp.concatenate([sin, sin], -1))
  return rope, jnp.broadcast_to(ctx.index + 1, ctx.first_valid.shape)


def kernel_attention(config: ModelConfig, qkv, bias, rope, lengths, ctx: AttentionContext,
                     layer_cache: LayerCache, mesh: Mesh | None):
  """Attention of the fused projection qkv [B, H + 2K, D] (before its bias) through the Pallas
  kernel, which also biases, rotates and writes this step's keys and values into the cache (in
  place): no pass over q, k or v and no cache-write kernel. Returns ([B, H, D], layer cache)."""
  out, k_all, v_all = decode_attention.decode_attention(
      qkv, layer_cache.k, layer_cache.v, ctx.first_valid, lengths, mesh, rope=rope,
      q_bias=bias if config.qkv_bias else None, heads=config.num_heads, write_kv=True)
  return out, LayerCache(k_all, v_all, None)


def kernel_attention_written(q, layer_cache: LayerCache, ctx: AttentionContext, rope, lengths,
                             mesh: Mesh | None) -> jax.Array:
  """Attention of q [B, H, D] (not yet rotated: the kernel rotates it) over a cache that already
  holds this step's keys and values (q unfused: a tensor-sharded mesh, or q/k norms)."""
  return decode_attention.decode_attention(q, layer_cache.k, layer_cache.v, ctx.first_valid,
                                           lengths, mesh, rope=rope)


def few_rows(config: ModelConfig, params: dict, x: jax.Array, layer_cache: LayerCache | None,
             mesh: Mesh | None, decode_kernel: bool) -> bool:
  """Whether a decoder layer (its `params`) runs this step as `few_rows_step`: the Pallas decode
  kernels, one token per row, at most decode_matvec.MAX_ROWS rows per device (one), the fused
  decode weights (`transpose_for_decode(fuse=True)`) and none of q/k norms or an o-projection
  bias."""
  if not (uses_kernel(decode_kernel, x, layer_cache) and not config.qk_norm
          and not config.o_bias):
    return False
  if "qkv_proj_t" not in params.get("attn", {}) or "gate_up_proj_t" not in params.get("mlp", {}):
    return False
  rows, _ = decode_matvec.rows_per_device(x.shape[0], mesh)
  if rows > decode_matvec.MAX_ROWS:
    return False
  e, m = config.hidden_size, config.intermediate_size
  qkv = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
  return all(decode_matvec.supported(rows, k, n) for k, n in
             ((e, qkv), (config.num_heads * config.head_dim, e), (e, m), (m, e)))


def few_rows_step(config: ModelConfig, params: dict, x, pending, positions,
                  ctx: AttentionContext, layer_cache: LayerCache, mesh: Mesh | None):
  """One decoder layer (its `params`) for a few rows, its matmuls through
  `decode_matvec.layer_matvec` (kernels or XLA ops per LAYER_KERNELS): the residual add before
  each norm + the norm + q/k/v; attention; the o-projection; its residual add + the norm +
  gate/up + SiLU-multiply; down. The down projection's residual add is left to the next layer's
  first kernel: returns ((x, pending down output), layer cache). The same numbers as the
  modules' path (residual sums and norms round to the compute dtype before the matmuls, each
  matmul's result rounds too).

  x: [B, 1, E]; pending: the previous layer's down output [B, 1, E] not yet added, or None.
  """
  dt = jnp.dtype(config.dtype)
  attn, mlp = params["attn"], params["mlp"]
  b, e = x.shape[0], config.hidden_size
  heads, kv, d = config.num_heads, config.num_kv_heads, config.head_dim
  mv = functools.partial(decode_matvec.layer_matvec, eps=config.rms_norm_eps, mesh=mesh)
  h = x[:, 0]
  qkv = mv("qkv", h, attn["qkv_proj_t"].astype(dt).reshape(-1, e),
           norm_scale=params["input_norm"]["scale"],
           add=None if pending is None else pending[:, 0])
  if pending is not None:
    qkv, h = qkv
  qkv = qkv.reshape(b, heads + 2 * kv, d)
  bias = attn["qkv_bias"].astype(dt) if config.qkv_bias else None
  rope, lengths = kernel_rope(positions, ctx, rope_inv_freq(config))
  out, layer_cache = kernel_attention(config, qkv, bias, rope, lengths, ctx, layer_cache, mesh)
  y = mv("o", out.reshape(b, heads * d).astype(dt),
         attn["o_proj_t"].astype(dt).reshape(e, heads * d))
  hidden, h = mv("gate_up", h, mlp["gate_up_proj_t"].astype(dt),
                 norm_scale=params["post_attn_norm"]["scale"], silu_mul=True, add=y)
  y = mv("down", hidden, mlp["down_proj_t"].astype(dt))
  return (h[:, None], y[:, None]), layer_cache
