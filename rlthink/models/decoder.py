"""The decoder-only transformer: one Flax linen definition for sampling, training, value and reward.

Used only through `init`/`apply`, wrapped by the pure functions `init_params` and `forward`. Layers
are one `nn.scan`ned layer, so compile time does not grow with depth. The KV-cache path is the same
code as the full forward: attention always runs over "slots" (cache slots, or the input positions
when there is no cache) with one mask built from causality, key validity, packing segments and an
optional sliding window.

For decoding, `rlthink.sample` runs the same modules on per-layer params with the matmul weights
stored transposed, q/k/v and gate/up each fused into one weight (`transpose_for_decode`) and, on
GPU, one-token attention through the Pallas kernel of `rlthink.models.decode_attention`
(`forward(..., decode_kernel=True)`), which also adds q's bias and applies its RoPE and, given
the fused q/k/v projection, biases, rotates and writes the step's keys and values into the cache.
With one row per device, the q/k/v and gate/up matmuls run as Pallas matvec kernels with the
residual adds and RMSNorms fused in (`rlthink.models.decode_matvec`).

Shapes: B batch, T input length, S key slots (cache length or T), E embed, H heads, K kv heads,
D head_dim, M mlp, V vocab, L layers.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlthink import sharding
from rlthink.models import decode_attention, decode_matvec
from rlthink.models.config import ModelConfig

HEADS = ("logits", "value", "reward", "hidden")
_NEG_INF = -1e30  # finite, so fully masked rows (padding queries) give no NaNs


def _dtype(name: str):
  return jnp.dtype(name)


def _param(module: nn.Module, name: str, shape: Sequence[int], names: Sequence[str | None],
           init=None):
  init = init or nn.initializers.normal(stddev=0.02)
  dtype = _dtype(module.config.param_dtype)
  return module.param(name, nn.with_logical_partitioning(init, tuple(names)), tuple(shape), dtype)


# Weights the sampler stores transposed (`transpose_for_decode`): name -> the einsum of x with the
# stored weight, normal and transposed. With one row per step (batch 1) a matmul is a reduction
# over the weight's input axis; storing that axis minor makes it a row reduction (measured
# 1.3-1.7x faster per call for the attention and down projections, docs/benchmarks).
_DECODE_T = {
    "q_proj": ("bte,ehd->bthd", "bte,hde->bthd"),
    "k_proj": ("bte,ehd->bthd", "bte,hde->bthd"),
    "v_proj": ("bte,ehd->bthd", "bte,hde->bthd"),
    "o_proj": ("bthd,hde->bte", "bthd,ehd->bte"),
    "gate_proj": ("bte,em->btm", "bte,me->btm"),
    "up_proj": ("bte,em->btm", "bte,me->btm"),
    "down_proj": ("btm,me->bte", "btm,em->bte"),
}
_T_SUFFIX = "_t"


def _matmul(module: nn.Module, name: str, x, shape, names):
  """x times the weight `name` (created with `shape`/`names`), or its transposed copy `name_t`
  when the params hold that instead (`transpose_for_decode`)."""
  dt = _dtype(module.config.dtype)
  normal, transposed = _DECODE_T[name]
  if module.has_variable("params", name + _T_SUFFIX):
    return jnp.einsum(transposed, x, module.get_variable("params", name + _T_SUFFIX).astype(dt))
  return jnp.einsum(normal, x, _param(module, name, shape, names).astype(dt))


def transpose_for_decode(params, fuse: bool = False):
  """Unrolled (`unstack_layers`) params with every layer matmul weight stored transposed, input
  axis minor (`q_proj` [E, H, D] -> `q_proj_t` [H, D, E], ...): `forward` reads either form.

  fuse: also concatenate the weights that read the same input, so each is one matmul (one kernel
  at batch 1): `qkv_proj_t` [H + 2K, D, E] (and `qkv_bias` [H + 2K, D]) for q/k/v, and
  `gate_up_proj_t` [2, M, E] for the MLP's gate and up. Only for weights whose head / mlp axes are
  not sharded (the split of the fused output would move data between devices). Measured: 0.5b
  decoding 1.16x faster at batch 1, 1.06x at batch 256 (docs/benchmarks, v6).
  """
  def layer(tree):
    out = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        out[key] = layer(value)
      elif key in _DECODE_T:
        axes = (1, 2, 0) if key in ("q_proj", "k_proj", "v_proj") else (
            (2, 0, 1) if key == "o_proj" else (1, 0))
        out[key + _T_SUFFIX] = jnp.transpose(value, axes)
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


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
  """Inverse RoPE frequencies [D/2], with linear or llama3 scaling applied (float64 numpy)."""
  d = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
  if config.rope_type == "linear":
    inv_freq = inv_freq / config.rope_factor
  elif config.rope_type == "llama3":
    factor, old_len = config.rope_factor, config.rope_original_max_position
    low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv_freq = np.where(medium, smoothed, scaled)
  return inv_freq


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin of the RoPE angles, float32 [..., D/2] for int positions [...]."""
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """x: [B, T, N, D]; positions: int[B, T]. Rotate-half convention (Llama, Qwen)."""
  cos, sin = rope_tables(positions, inv_freq)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


@jax.custom_vjp
def project_logits(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [B, T, E] @ w [E, V] -> float32 logits [B, T, V], from compute-dtype inputs.

  The backward casts d(logits) to the inputs' dtype first, so its two matmuls run in that dtype
  (bf16 tensor cores) instead of float32 x bf16 (float32 matmuls over the whole vocab).
  """
  return jnp.einsum("bte,ev->btv", x, w, preferred_element_type=jnp.float32)


def _project_logits_fwd(x, w):
  return project_logits(x, w), (x, w)


def _project_logits_bwd(residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  dx = jnp.einsum("btv,ev->bte", g, w.astype(x.dtype))
  dw = jnp.einsum("bte,btv->ev", x, g, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dw.astype(w.dtype)


project_logits.defvjp(_project_logits_fwd, _project_logits_bwd)


class RMSNorm(nn.Module):
  config: ModelConfig
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _param(self, "scale", (x.shape[-1],), (self.axis_name,), nn.initializers.ones)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.config.rms_norm_eps)
    return (y * scale.astype(jnp.float32)).astype(_dtype(self.config.dtype))


def attention_mask(q_slots: jax.Array, key_valid: jax.Array, q_segments: jax.Array | None,
                   k_segments: jax.Array | None, window: int | None) -> jax.Array:
  """bool[B, T, S]: causal over slots, valid keys only, same packing segment, within the window.

  q_slots: int[B, T] slot of each query; key_valid: bool[B, S].
  """
  k_slots = jnp.arange(key_valid.shape[1], dtype=jnp.int32)
  mask = (k_slots[None, None, :] <= q_slots[:, :, None]) & key_valid[:, None, :]
  if q_segments is not None:
    mask &= q_segments[:, :, None] == k_segments[:, None, :]
  if window is not None:
    mask &= q_slots[:, :, None] - k_slots[None, None, :] < window
  return mask


def dot_product_attention(q, k, v, mask, kv_layout: str = "bskd") -> jax.Array:
  """q: [B,T,H,D], k/v: [B,S,K,D] (or [B,K,S,D] with kv_layout="bksd", the KV-cache layout),
  mask: bool[B,T,S] -> [B,T,H,D]. Softmax in float32."""
  b, t, h, d = q.shape
  kv = k.shape[kv_layout.index("k")]
  q = q.reshape(b, t, kv, h // kv, d)
  logits = jnp.einsum(f"btkgd,{kv_layout}->bkgts", q, k, preferred_element_type=jnp.float32)
  logits = logits / np.sqrt(d).astype(np.float32)
  logits = jnp.where(mask[:, None, None, :, :], logits, _NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs, v)
  return out.reshape(b, t, h, d)


def _kernel_rope(positions, ctx, inv_freq):
  """The decode kernel's RoPE tables ((cos, sin) [B, D], both halves) and each row's cache
  length after this step."""
  cos, sin = rope_tables(positions[:, 0], inv_freq)  # the same in every layer: CSE'd
  rope = (jnp.concatenate([cos, cos], -1), jnp.concatenate([sin, sin], -1))
  index, first_valid = ctx[4], ctx[5]
  return rope, jnp.broadcast_to(index + 1, first_valid.shape)


def _kernel_attention(cfg, qkv, bias, rope, lengths, ctx, layer_cache, mesh):
  """Attention of the fused projection qkv [B, H + 2K, D] (before its bias) through the Pallas
  kernel, which also biases, rotates and writes this step's keys and values into the cache (in
  place): no pass over q, k or v and no cache-write kernel. Returns ([B, H, D], layer cache)."""
  k_all, v_all, _ = layer_cache
  out, k_all, v_all = decode_attention.decode_attention(
      qkv, k_all, v_all, ctx[5], lengths, mesh, rope=rope,
      q_bias=bias if cfg.qkv_bias else None, heads=cfg.num_heads, write_kv=True)
  return out, (k_all, v_all, None)


class Attention(nn.Module):
  config: ModelConfig
  mesh: Mesh | None = None
  decode_kernel: bool = False  # see `forward`

  @nn.compact
  def __call__(self, x, positions, ctx, layer_cache):
    cfg, dt = self.config, _dtype(self.config.dtype)
    e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def project(name, heads, head_axis):
      y = _matmul(self, f"{name}_proj", x, (e, heads, d), ("embed", head_axis, "head_dim"))
      if cfg.qkv_bias:
        y = y + _param(self, f"{name}_bias", (heads, d), (head_axis, "head_dim"),
                       nn.initializers.zeros).astype(dt)
      return sharding.constrain(y, ("batch", "length", head_axis, "head_dim"), self.mesh)

    # The Pallas decode kernel rotates q itself; given the fused projection `qkv` (without its
    # bias) it also adds the biases and rotates and stores k and v (see below).
    kernel = (self.decode_kernel and layer_cache is not None and layer_cache[2] is None
              and x.shape[1] == 1)
    qkv = bias = None
    if self.has_variable("params", "qkv_proj_t"):  # transpose_for_decode(fuse=True)
      w = self.get_variable("params", "qkv_proj_t").astype(dt)
      qkv = jnp.einsum("bte,hde->bthd", x, w)
      q, k, v = jnp.split(qkv, [h, h + kv], axis=2)
      if cfg.qkv_bias:
        bias = self.get_variable("params", "qkv_bias").astype(dt)
        q_bias, k_bias, v_bias = jnp.split(bias, [h, h + kv], axis=0)
        q, k, v = q + q_bias, k + k_bias, v + v_bias
    else:
      q, k, v = (project("q", h, "heads"), project("k", kv, "kv_heads"),
                 project("v", kv, "kv_heads"))
    if cfg.qk_norm:
      qkv = None
      q = RMSNorm(cfg, "head_dim", name="q_norm")(q)
      k = RMSNorm(cfg, "head_dim", name="k_norm")(k)
    inv_freq = rope_inv_freq(cfg)
    q_slots, key_valid, q_segments, k_segments, index, first_valid = ctx
    if kernel:
      rope, lengths = _kernel_rope(positions, ctx, inv_freq)
      if qkv is not None:
        out, layer_cache = _kernel_attention(cfg, qkv[:, 0], bias, rope, lengths, ctx,
                                             layer_cache, self.mesh)
        return self._output(out[:, None].astype(dt)), layer_cache
    else:
      q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)

    kv_layout = "bskd"
    if layer_cache is not None:  # write this step's keys/values into their slots, attend to all
      # Scanned layers carry the whole [L, B, K, S, D] cache through the scan and write it in
      # place at (layer, :, :, index): scanning it as xs/ys would rebuild (copy) the full cache
      # every step. Unrolled layers (layer None) each get their own [B, K, S, D] buffer. Heads
      # before slots, so the attention dots read a layer's cache without a transpose.
      k_all, v_all, layer = layer_cache
      new_k, new_v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, T, D]
      if layer is None:
        start, new_k, new_v = (0, 0, index, 0), new_k, new_v
      else:
        start, new_k, new_v = (layer, 0, 0, index, 0), new_k[None], new_v[None]
      k_all = jax.lax.dynamic_update_slice(k_all, new_k.astype(k_all.dtype), start)
      v_all = jax.lax.dynamic_update_slice(v_all, new_v.astype(v_all.dtype), start)
      if kernel:  # q unfused (a tensor-sharded mesh, or q/k norms): rotated by the kernel
        out = decode_attention.decode_attention(q[:, 0], k_all, v_all, first_valid, lengths,
                                                self.mesh, rope=rope)
        return self._output(out[:, None].astype(dt)), (k_all, v_all, layer)
      if layer is None:
        k, v = k_all.astype(dt), v_all.astype(dt)
      else:
        k = jax.lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False).astype(dt)
        v = jax.lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False).astype(dt)
        layer = layer + 1
      layer_cache = (k_all, v_all, layer)
      kv_layout = "bksd"

    use_cudnn = (cfg.attention_impl == "cudnn" and layer_cache is None and key_valid is None
                 and q_segments is None and cfg.sliding_window is None)
    if use_cudnn:
      out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    else:
      if key_valid is None:
        key_valid = jnp.ones(k.shape[:2], bool)
      mask = attention_mask(q_slots, key_valid, q_segments, k_segments, cfg.sliding_window)
      out = dot_product_attention(q, k, v, mask, kv_layout)
    return self._output(out), layer_cache

  def _output(self, out):
    cfg, dt = self.config, _dtype(self.config.dtype)
    out = sharding.constrain(out, ("batch", "length", "heads", "head_dim"), self.mesh)
    y = _matmul(self, "o_proj", out, (cfg.num_heads, cfg.head_dim, cfg.hidden_size),
                ("heads", "head_dim", "embed"))
    if cfg.o_bias:
      y = y + _param(self, "o_bias", (cfg.hidden_size,), ("embed",),
                     nn.initializers.zeros).astype(dt)
    return y


class MLP(nn.Module):
  config: ModelConfig
  mesh: Mesh | None = None

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.config, _dtype(self.config.dtype)
    e, m = cfg.hidden_size, cfg.intermediate_size
    if self.has_variable("params", "gate_up_proj_t"):  # transpose_for_decode(fuse=True)
      gate, up = jnp.einsum("bte,cme->cbtm", x,
                            self.get_variable("params", "gate_up_proj_t").astype(dt))
    else:
      gate = _matmul(self, "gate_proj", x, (e, m), ("embed", "mlp"))
      up = _matmul(self, "up_proj", x, (e, m), ("embed", "mlp"))
    hidden = sharding.constrain(nn.silu(gate) * up, ("batch", "length", "mlp"), self.mesh)
    return _matmul(self, "down_proj", hidden, (m, e), ("mlp", "embed"))


class DecoderLayer(nn.Module):
  config: ModelConfig
  mesh: Mesh | None = None
  decode_kernel: bool = False

  @nn.compact
  def __call__(self, carry, positions, ctx):
    # layer_cache: None, (k [L,B,K,S,D], v, this layer's index) or (k [B,K,S,D], v, None)
    x, layer_cache = carry
    pending = None  # the last few-rows layer's down projection, not yet added to x
    if isinstance(x, tuple):
      x, pending = x
    if self._few_rows(x, layer_cache):
      return self._few_rows_step(x, pending, positions, ctx, layer_cache), None
    if pending is not None:
      x = x + pending
    h, layer_cache = Attention(self.config, self.mesh, self.decode_kernel, name="attn")(
        RMSNorm(self.config, name="input_norm")(x), positions, ctx, layer_cache)
    x = x + h
    x = x + MLP(self.config, self.mesh, name="mlp")(RMSNorm(self.config, name="post_attn_norm")(x))
    x = sharding.constrain(x, ("batch", "length", "act_embed"), self.mesh)
    return (x, layer_cache), None

  def _few_rows(self, x, layer_cache) -> bool:
    """Whether this decode step runs as `_few_rows_step`: the Pallas decode kernels, one token
    per row, at most decode_matvec.MAX_ROWS rows per device (one), the fused decode weights
    (`transpose_for_decode(fuse=True)`) and none of q/k norms or an o-projection bias."""
    cfg = self.config
    if not (self.decode_kernel and layer_cache is not None and layer_cache[2] is None
            and x.shape[1] == 1 and not cfg.qk_norm and not cfg.o_bias):
      return False
    params = self.variables.get("params", {})
    if "qkv_proj_t" not in params.get("attn", {}) or "gate_up_proj_t" not in params.get(
        "mlp", {}):
      return False
    rows, _ = decode_matvec.rows_per_device(x.shape[0], self.mesh)
    if rows > decode_matvec.MAX_ROWS:
      return False
    e, m = cfg.hidden_size, cfg.intermediate_size
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
    return all(decode_matvec.supported(rows, k, n) for k, n in
               ((e, qkv), (cfg.num_heads * cfg.head_dim, e), (e, m), (m, e)))

  def _few_rows_step(self, x, pending, positions, ctx, layer_cache):
    """The layer for a few rows, its matmuls through `decode_matvec.layer_matvec` (kernels or
    XLA ops per LAYER_KERNELS): the residual add before each norm + the norm + q/k/v; attention;
    the o-projection; its residual add + the norm + gate/up + SiLU-multiply; down. The down
    projection's residual add is left to the next layer's first kernel: returns ((x, pending
    down output), layer cache). The same numbers as the modules' path (residual sums and norms
    round to the compute dtype before the matmuls, each matmul's result rounds too)."""
    cfg, dt = self.config, _dtype(self.config.dtype)
    params = self.variables["params"]
    attn, mlp = params["attn"], params["mlp"]
    b, e = x.shape[0], cfg.hidden_size
    heads, kv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    mv = functools.partial(decode_matvec.layer_matvec, eps=cfg.rms_norm_eps, mesh=self.mesh)
    h = x[:, 0]
    qkv = mv("qkv", h, attn["qkv_proj_t"].astype(dt).reshape(-1, e),
             norm_scale=params["input_norm"]["scale"],
             add=None if pending is None else pending[:, 0])
    if pending is not None:
      qkv, h = qkv
    qkv = qkv.reshape(b, heads + 2 * kv, d)
    bias = attn["qkv_bias"].astype(dt) if cfg.qkv_bias else None
    rope, lengths = _kernel_rope(positions, ctx, rope_inv_freq(cfg))
    out, layer_cache = _kernel_attention(cfg, qkv, bias, rope, lengths, ctx, layer_cache,
                                         self.mesh)
    y = mv("o", out.reshape(b, heads * d).astype(dt),
           attn["o_proj_t"].astype(dt).reshape(e, heads * d))
    hidden, h = mv("gate_up", h, mlp["gate_up_proj_t"].astype(dt),
                   norm_scale=params["post_attn_norm"]["scale"], silu_mul=True, add=y)
    y = mv("down", hidden, mlp["down_proj_t"].astype(dt))
    return (h[:, None], y[:, None]), layer_cache


class Transformer(nn.Module):
  """Trunk plus the requested heads. Returns ({head: output}, new_cache)."""

  config: ModelConfig
  mesh: Mesh | None = None
  heads: tuple[str, ...] = ("logits",)
  unrolled: bool = False  # one module per layer ("layers_0", ...) instead of the scanned stack
  decode_kernel: bool = False  # see `forward`

  @nn.compact
  def __call__(self, tokens, positions, ctx, cache):
    cfg, dt = self.config, _dtype(self.config.dtype)
    embedding = _param(self, "embedding", (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
    # The lookup reads a gathered (replicated) compute-dtype copy of the table, as FSDP does for
    # every weight; gathering from a vocab-sharded table makes XLA replicate the activations.
    table = sharding.constrain(embedding.astype(dt), (None, None), self.mesh)
    x = jnp.take(table, tokens, axis=0)
    x = sharding.constrain(x, ("batch", "length", "act_embed"), self.mesh)

    layer = DecoderLayer
    if cfg.remat:
      layer = nn.remat(layer, prevent_cse=False)
    if self.unrolled:  # per-layer weights and cache buffers: nothing is sliced out of a stack
      ks, vs = (None, None) if cache is None else (list(cache["k"]), list(cache["v"]))
      for i in range(cfg.num_layers):
        layer_cache = None if cache is None else (ks[i], vs[i], None)
        (x, layer_cache), _ = layer(cfg, self.mesh, self.decode_kernel, name=f"layers_{i}")(
            (x, layer_cache), positions, ctx)
        if cache is not None:
          ks[i], vs[i] = layer_cache[0], layer_cache[1]
      layer_caches = None if cache is None else (tuple(ks), tuple(vs))
      if isinstance(x, tuple):  # the last few-rows layer's pending residual add
        x = x[0] + x[1]
    else:
      stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      unroll=cfg.scan_unroll if cfg.scan_unroll > 0 else cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      layer_caches = None if cache is None else (cache["k"], cache["v"], jnp.int32(0))
      (x, layer_caches), _ = stack(cfg, self.mesh, name="layers")((x, layer_caches), positions,
                                                                   ctx)
    x = RMSNorm(cfg, name="final_norm")(x)

    outputs = {}
    for head in self.heads:
      if head == "logits":
        if cfg.tie_embeddings:
          w = embedding.T
        else:
          w = _param(self, "lm_head", (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))
        logits = project_logits(x, w.astype(dt))
        outputs[head] = sharding.constrain(logits, ("batch", "length", "vocab"), self.mesh)
      elif head == "hidden":  # for losses that fuse the vocab projection (ops.fused_*logprobs)
        outputs[head] = x
      elif head in ("value", "reward"):
        w = _param(self, f"{head}_head", (cfg.hidden_size,), ("embed",))
        b = _param(self, f"{head}_bias", (), (), nn.initializers.zeros)
        outputs[head] = jnp.einsum("bte,e->bt", x.astype(jnp.float32), w.astype(jnp.float32)) + b
      else:
        raise ValueError(f"unknown head {head!r}; heads are {HEADS}")
    new_cache = None
    if cache is not None:
      new_cache = dict(cache, k=layer_caches[0], v=layer_caches[1])
    return outputs, new_cache


# ----------------------------------------------------------------------------------------------
# Pure functions: what the rest of rlthink calls.


def _dummy_ctx(batch: int, length: int):
  slots = jnp.zeros((batch, length), jnp.int32)
  return (slots, None, None, None, jnp.int32(0), None)


def _init_config(config: ModelConfig) -> ModelConfig:
  # Initialisation runs the layer loop rolled: unrolling changes no parameter (each layer draws
  # from its own split key either way) and an unrolled random init is slow to compile.
  return config.replace(scan_unroll=1) if config.scan_unroll != 1 else config


def abstract_params(config: ModelConfig, heads: Sequence[str] = ("logits",)):
  """(shape tree, logical-axes tree) of the parameters, without allocating them."""
  model = Transformer(_init_config(config), None, tuple(heads))
  tokens = jnp.zeros((1, 1), jnp.int32)
  boxed = jax.eval_shape(
      lambda rng: model.init(rng, tokens, jnp.zeros((1, 1), jnp.int32), _dummy_ctx(1, 1), None),
      jax.random.key(0))["params"]
  logical = nn.get_partition_spec(boxed)
  logical = jax.tree.map(tuple, logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  shapes = nn.unbox(boxed)
  return shapes, logical


def param_shardings(config: ModelConfig, mesh: Mesh, heads: Sequence[str] = ("logits",)):
  """NamedShardings of every parameter on `mesh`, from the logical axes and `sharding.RULES`."""
  shapes, logical = abstract_params(config, heads)
  return sharding.tree_shardings(mesh, logical, shapes)


def init_params(config: ModelConfig, rng: jax.Array, heads: Sequence[str] = ("logits",),
                mesh: Mesh | None = None):
  """Random parameters, created directly in their shardings when `mesh` is given."""
  return _init_fn(config, tuple(heads), mesh)(rng)


@functools.lru_cache(maxsize=64)
def _init_fn(config: ModelConfig, heads: tuple[str, ...], mesh: Mesh | None):
  """The jitted initializer of one (config, heads, mesh): compiled once, not per call."""
  model = Transformer(_init_config(config), None, heads)

  def init(rng):
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = model.init(rng, tokens, jnp.zeros((1, 1), jnp.int32), _dummy_ctx(1, 1), None)
    return nn.unbox(variables["params"])

  out_shardings = None if mesh is None else param_shardings(config, mesh, heads)
  return jax.jit(init, out_shardings=out_shardings)


# Logical axes of the KV cache arrays (see `init_cache`).
CACHE_AXES = {"k": ("layers", "batch", "kv_heads", "cache_length", "head_dim"),
              "v": ("layers", "batch", "kv_heads", "cache_length", "head_dim"),
              "valid": ("batch", "cache_length"), "index": ()}


def init_cache(config: ModelConfig, batch: int, length: int, mesh: Mesh | None = None,
               dtype: Any = None, per_layer: bool = False) -> dict:
  """An empty KV cache of `length` slots: k/v [L, B, K, S, D], valid bool[B, S], index int32[].

  per_layer: k/v as tuples of L arrays [B, K, S, D] instead, for unrolled layers
  (`unstack_layers` params).
  """
  if length > config.max_seq_len:
    raise ValueError(f"cache length {length} exceeds the model's max_seq_len {config.max_seq_len}")
  dtype = dtype or _dtype(config.dtype)
  shape = (config.num_layers, batch, config.num_kv_heads, length, config.head_dim)
  cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
           "valid": jnp.zeros((batch, length), bool), "index": jnp.zeros((), jnp.int32)}
  if mesh is not None:
    cache = {k: jax.device_put(v, sharding.named_sharding(mesh, CACHE_AXES[k], v.shape))
             for k, v in cache.items()}
  if per_layer:
    cache.update(k=tuple(cache["k"]), v=tuple(cache["v"]))
  return cache


def unstack_layers(params):
  """The same parameters with the stacked `layers` split into `layers_0`, ..., `layers_{L-1}`:
  `forward` then runs the layers unrolled, each reading its own weight (and cache) buffers.
  Compiles L layer bodies instead of one; the sampler's decode loop uses it."""
  layers = params["layers"]
  num_layers = jax.tree.leaves(layers)[0].shape[0]
  rest = {k: v for k, v in params.items() if k != "layers"}
  return {**rest, **{f"layers_{i}": jax.tree.map(lambda p, i=i: p[i], layers)
                     for i in range(num_layers)}}


def unembedding(config: ModelConfig, params) -> jax.Array:
  """The output projection as [V, E] (the tied embedding table, or lm_head transposed), in the
  parameter dtype: logits = hidden @ unembedding.T."""
  return params["embedding"] if config.tie_embeddings else params["lm_head"].T


def forward(config: ModelConfig, params, tokens: jax.Array, *, positions: jax.Array | None = None,
            attention_mask: jax.Array | None = None, segment_ids: jax.Array | None = None,
            cache: dict | None = None, heads: Sequence[str] = ("logits",),
            mesh: Mesh | None = None, decode_kernel: bool = False):
  """One forward pass. Returns ({head: output}, new_cache or None).

  Args:
    tokens: int32[B, T].
    positions: int32[B, T] RoPE positions; default counts the valid tokens (after those already in
      the cache), so left padding and packing-free batches need none.
    attention_mask: bool[B, T], False for padding; default all True.
    segment_ids: int32[B, T] for packed sequences (tokens attend within their segment only;
      positions must then be given). Not used with a cache.
    cache: from `init_cache`: the tokens are written at `cache["index"]` and attend to every valid
      earlier slot; the returned cache has the index advanced by T.
    heads: any of "logits" (float32[B, T, V]), "value" and "reward" (float32[B, T]), and
      "hidden" (the final-normed hidden states [B, T, E] in the compute dtype: with
      `unembedding(config, params)` they give the logits, see `ops.fused_token_logprobs`).

  `params` from `unstack_layers` run the layers unrolled (with a `per_layer` cache).

  decode_kernel: with unrolled layers and one token per row, attend with the Pallas kernel of
    `rlthink.models.decode_attention`, which reads only the slots from each row's first valid
    one to the one just written: the cache's valid slots must be contiguous there (left-padded
    prefill, then decoding: what `rlthink.sample` builds) and its length a multiple of 16.
    With one row per device and the fused decode weights (`transpose_for_decode(fuse=True)`),
    the layers' q/k/v and gate/up matmuls also run as `decode_matvec` kernels
    (`DecoderLayer._few_rows_step`).
  """
  unrolled = "layers" not in params
  if cache is not None and unrolled != isinstance(cache["k"], (tuple, list)):
    raise ValueError("stacked params need a stacked cache and unstack_layers params a per_layer "
                     "cache (init_cache(..., per_layer=True))")
  b, t = tokens.shape
  valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
  if cache is None:
    if positions is None:
      positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
    q_slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    key_valid = None if attention_mask is None else valid
    ctx = (q_slots, key_valid, segment_ids, segment_ids, jnp.int32(0), None)
  else:
    if segment_ids is not None:
      raise ValueError("segment_ids (packing) cannot be combined with a KV cache")
    index = cache["index"]
    if positions is None:
      before = jnp.sum(cache["valid"], axis=1, keepdims=True)
      positions = before + jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
    key_valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], valid, index, axis=1)
    cache = dict(cache, valid=key_valid, index=index + t)
    q_slots = index + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    first_valid = jnp.argmax(key_valid, axis=1).astype(jnp.int32) if decode_kernel else None
    ctx = (q_slots, key_valid, None, None, index, first_valid)
  model = Transformer(config, mesh, tuple(heads), unrolled, decode_kernel)
  return model.apply({"params": params}, tokens, positions.astype(jnp.int32), ctx, cache)
