"""The decoder-only transformer: one Flax linen definition for sampling, training, value and reward.

Used only through `init`/`apply`, wrapped by the pure functions `init_params` and `forward`. Layers
are one `nn.scan`ned layer, so compile time does not grow with depth. The KV-cache path is the same
code as the full forward: attention always runs over "slots" (cache slots, or the input positions
when there is no cache) with one mask built from causality, key validity, packing segments and an
optional sliding window (`attention`).

The sampler runs these same modules on parameters laid out for decoding (per-layer, transposed,
fused: `rlthink.models.decode`) and, with `forward(..., decode_kernel=True)`, hands one-token steps
to the Pallas kernels that `decode` dispatches to.

Shapes: B batch, T input length, S key slots (cache length or T), E embed, H heads, K kv heads,
D head_dim, M mlp, V vocab, L layers.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlthink import sharding
from rlthink.models import decode
from rlthink.models.attention import (AttentionContext, LayerCache, apply_rope,
                                      attention_mask, dot_product_attention, rope_inv_freq)
from rlthink.models.config import ModelConfig

HEADS = ("logits", "value", "reward", "hidden")


def _dtype(name: str):
  return jnp.dtype(name)


def _param(module: nn.Module, name: str, shape: Sequence[int], names: Sequence[str | None],
           init=None):
  init = init or nn.initializers.normal(stddev=0.02)
  dtype = _dtype(module.config.param_dtype)
  return module.param(name, nn.with_logical_partitioning(init, tuple(names)), tuple(shape), dtype)


# The einsum of x with each layer matmul weight as created; `decode.TRANSPOSED` has the sampler's
# transposed form.
_EINSUMS = {
    "q_proj": "bte,ehd->bthd",
    "k_proj": "bte,ehd->bthd",
    "v_proj": "bte,ehd->bthd",
    "o_proj": "bthd,hde->bte",
    "gate_proj": "bte,em->btm",
    "up_proj": "bte,em->btm",
    "down_proj": "btm,me->bte",
}


# x -> x A -> (x A) B of a LoRA adapter on each weight (`rlthink.models.lora`; r: the rank).
_LORA_EINSUMS = {
    "q_proj": ("bte,er->btr", "btr,rhd->bthd"),
    "k_proj": ("bte,er->btr", "btr,rhd->bthd"),
    "v_proj": ("bte,er->btr", "btr,rhd->bthd"),
    "o_proj": ("bthd,hdr->btr", "btr,re->bte"),
    "gate_proj": ("bte,er->btr", "btr,rm->btm"),
    "up_proj": ("bte,er->btr", "btr,rm->btm"),
    "down_proj": ("btm,mr->btr", "btr,re->bte"),
}


def _matmul(module: nn.Module, name: str, x, shape, names):
  """x times the weight `name` (created with `shape`/`names`), or its transposed copy `name_t`
  when the params hold that instead (`decode.transpose_for_decode`), plus (x A) B when the
  params hold LoRA adapters `name_lora_a` / `name_lora_b` beside it (B already scaled)."""
  dt = _dtype(module.config.dtype)
  if module.has_variable("params", name + decode.T_SUFFIX):
    weight = module.get_variable("params", name + decode.T_SUFFIX)
    return jnp.einsum(decode.TRANSPOSED[name][0], x, weight.astype(dt))
  y = jnp.einsum(_EINSUMS[name], x, _param(module, name, shape, names).astype(dt))
  if module.has_variable("params", name + "_lora_a"):
    down, up = _LORA_EINSUMS[name]
    a = module.get_variable("params", name + "_lora_a").astype(dt)
    b = module.get_variable("params", name + "_lora_b").astype(dt)
    y = y + jnp.einsum(up, jnp.einsum(down, x, a), b)
  return y


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


class Attention(nn.Module):
  config: ModelConfig
  mesh: Mesh | None = None
  decode_kernel: bool = False  # see `forward`

  @nn.compact
  def __call__(self, x, positions, ctx: AttentionContext, layer_cache: LayerCache | None):
    cfg, dt = self.config, _dtype(self.config.dtype)
    e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def project(name, heads, head_axis):
      y = _matmul(self, f"{name}_proj", x, (e, heads, d), ("embed", head_axis, "head_dim"))
      if cfg.qkv_bias:
        y = y + _param(self, f"{name}_bias", (heads, d), (head_axis, "head_dim"),
                       nn.initializers.zeros).astype(dt)
      return sharding.constrain(y, ("batch", "length", head_axis, "head_dim"), self.mesh)

    # The Pallas decode kernel rotates q itself; given the fused projection `qkv` (without its
    # bias) it also adds the biases and rotates and stores k and v (`decode.kernel_attention`).
    kernel = decode.uses_kernel(self.decode_kernel, x, layer_cache)
    qkv = bias = None
    if self.has_variable("params", "qkv_proj_t"):  # decode.transpose_for_decode(fuse=True)
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
    if kernel:
      rope, lengths = decode.kernel_rope(positions, ctx, inv_freq)
      if qkv is not None:
        out, layer_cache = decode.kernel_attention(cfg, qkv[:, 0], bias, rope, lengths, ctx,
                                                   layer_cache, self.mesh)
        return self._output(out[:, None].astype(dt)), layer_cache
    else:
      q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)

    kv_layout = "bskd"
    key_valid = ctx.key_valid
    if layer_cache is not None:  # write this step's keys/values into their slots, attend to all
      # Scanned layers carry the whole [L, B, K, S, D] cache through the scan and write it in
      # place at (layer, :, :, index): scanning it as xs/ys would rebuild (copy) the full cache
      # every step. Unrolled layers (layer None) each get their own [B, K, S, D] buffer. Heads
      # before slots, so the attention dots read a layer's cache without a transpose.
      k_all, v_all, layer = layer_cache
      new_k, new_v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, T, D]
      if layer is None:
        start, new_k, new_v = (0, 0, ctx.index, 0), new_k, new_v
      else:
        start, new_k, new_v = (layer, 0, 0, ctx.index, 0), new_k[None], new_v[None]
      k_all = jax.lax.dynamic_update_slice(k_all, new_k.astype(k_all.dtype), start)
      v_all = jax.lax.dynamic_update_slice(v_all, new_v.astype(v_all.dtype), start)
      if kernel:  # q unfused (a tensor-sharded mesh, or q/k norms): rotated by the kernel
        layer_cache = LayerCache(k_all, v_all, layer)
        out = decode.kernel_attention_written(q[:, 0], layer_cache, ctx, rope, lengths,
                                              self.mesh)
        return self._output(out[:, None].astype(dt)), layer_cache
      if layer is None:
        k, v = k_all.astype(dt), v_all.astype(dt)
      else:
        k = jax.lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False).astype(dt)
        v = jax.lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False).astype(dt)
        layer = layer + 1
      layer_cache = LayerCache(k_all, v_all, layer)
      kv_layout = "bksd"

    use_cudnn = (cfg.attention_impl == "cudnn" and layer_cache is None and key_valid is None
                 and ctx.q_segments is None and cfg.sliding_window is None)
    if use_cudnn:
      out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    else:
      if key_valid is None:
        key_valid = jnp.ones(k.shape[:2], bool)
      mask = attention_mask(ctx.q_slots, key_valid, ctx.q_segments, ctx.k_segments,
                            cfg.sliding_window)
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
    if self.has_variable("params", "gate_up_proj_t"):  # decode.transpose_for_decode(fuse=True)
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
  def __call__(self, carry, positions, ctx: AttentionContext):
    x, layer_cache = carry  # layer_cache: a LayerCache, or None without a cache
    pending = None  # the last few-rows layer's down projection, not yet added to x
    if isinstance(x, tuple):
      x, pending = x
    if self.decode_kernel and decode.few_rows(self.config, self.variables.get("params", {}), x,
                                              layer_cache, self.mesh, self.decode_kernel):
      return decode.few_rows_step(self.config, self.variables["params"], x, pending, positions,
                                  ctx, layer_cache, self.mesh), None
    if pending is not None:
      x = x + pending
    h, layer_cache = Attention(self.config, self.mesh, self.decode_kernel, name="attn")(
        RMSNorm(self.config, name="input_norm")(x), positions, ctx, layer_cache)
    x = x + h
    x = x + MLP(self.config, self.mesh, name="mlp")(RMSNorm(self.config, name="post_attn_norm")(x))
    x = sharding.constrain(x, ("batch", "length", "act_embed"), self.mesh)
    return (x, layer_cache), None


class Transformer(nn.Module):
  """Trunk plus the requested heads. Returns ({head: output}, new_cache)."""

  config: ModelConfig
  mesh: Mesh | None = None
  heads: tuple[str, ...] = ("logits",)
  unrolled: bool = False  # one module per layer ("layers_0", ...) instead of the scanned stack
  decode_kernel: bool = False  # see `forward`

  @nn.compact
  def __call__(self, tokens, positions, ctx: AttentionContext, cache: dict | None):
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
        layer_cache = None if cache is None else LayerCache(ks[i], vs[i], None)
        (x, layer_cache), _ = layer(cfg, self.mesh, self.decode_kernel, name=f"layers_{i}")(
            (x, layer_cache), positions, ctx)
        if cache is not None:
          ks[i], vs[i] = layer_cache.k, layer_cache.v
      layer_caches = None if cache is None else (tuple(ks), tuple(vs))
      if isinstance(x, tuple):  # the last few-rows layer's pending residual add
        x = x[0] + x[1]
    else:
      stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      unroll=cfg.scan_unroll if cfg.scan_unroll > 0 else cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      layer_caches = None if cache is None else LayerCache(cache["k"], cache["v"], jnp.int32(0))
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


def _dummy_ctx(batch: int, length: int) -> AttentionContext:
  return AttentionContext(q_slots=jnp.zeros((batch, length), jnp.int32), index=jnp.int32(0))


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
  (`decode.unstack_layers` params).
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

  `params` from `decode.unstack_layers` run the layers unrolled (with a `per_layer` cache).

  decode_kernel: with unrolled layers and one token per row, attend with the Pallas kernel of
    `rlthink.models.decode_attention`, which reads only the slots from each row's first valid
    one to the one just written: the cache's valid slots must be contiguous there (left-padded
    prefill, then decoding: what `rlthink.sample` builds) and its length a multiple of 16.
    With one row per device and the fused decode weights
    (`decode.transpose_for_decode(fuse=True)`), the layers' q/k/v and gate/up matmuls also run
    as `decode_matvec` kernels (`decode.few_rows_step`).
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
    ctx = AttentionContext(q_slots, key_valid, segment_ids, segment_ids, jnp.int32(0), None)
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
    ctx = AttentionContext(q_slots, key_valid, None, None, index, first_valid)
  model = Transformer(config, mesh, tuple(heads), unrolled, decode_kernel)
  return model.apply({"params": params}, tokens, positions.astype(jnp.int32), ctx, cache)
