"""Decode attention as one Pallas (Triton) kernel that reads only the filled KV-cache slots.

One decode step attends one query per head to the slots [start, length) of each row's cache: the
left-padded prompt starts at `start` and the last written token sits at `length - 1`. XLA's
einsum attention reads every slot of the cache (P - 1 + C of them) and runs the softmax as
separate kernels; this kernel splits the slots of each (row, KV head) into chunks, skips the
chunks outside [start, length), and runs an online softmax over the rest, all the query heads of
a KV group at once (loaded as a 16-row tile, the smallest for tensor cores, the rows past the
group masked). The decoder hands over its fused q/k/v projection as the matmul wrote it: the
kernel reads the query rows from it, adds their bias and applies RoPE, and does the same for this
step's key and value, which it writes into the cache in place (`write_kv`): per layer, no
elementwise pass over q, k or v and no cache-write kernel. The per-chunk partial results are
merged by a log-sum-exp in XLA; from WHOLE_ROW_PROGRAMS programs on, each takes a whole row.

Layouts are the decoder's: q [B, H, D]; the cache k, v [B, K, S, D] (a per-layer buffer of the
unrolled decode loop, read in place). On a non-GPU backend the kernel runs in Pallas' interpreter
(for tests). With a mesh it runs per shard (`jax.shard_map`): rows over the batch axes, KV heads
(and their query heads) over `tensor` when they divide.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.sharding import Mesh, PartitionSpec

from rlthink import sharding

_NEG_INF = -1e30
_MIN_ROWS = 16  # tensor-core tiles need >= 16 rows: the query heads of a group are padded to it


def supported_length(length: int) -> bool:
  """Whether a cache of `length` slots can use the kernel (whole chunks of >= 16 slots)."""
  return length >= 16 and length % 16 == 0


# From this many (row, KV head) programs on, each takes all slots of its row (one chunk): the
# GPU is full without splitting, and the kernel writes the final output (no partial results to
# store and merge: two kernels less per layer). Measured on an H200 (docs/benchmarks.md):
# at 128 programs (batch 64 of a 2-KV-head model) whole rows are 3 % faster per step than chunks;
# at 2 (batch 1) +1 % on qwen2.5-0.5b, -1 % on qwen2.5-1.5b, so batch 1 keeps its chunks.
WHOLE_ROW_PROGRAMS = 128

# The tiling of whole-row programs, (block, num_warps, num_stages), by program count: the entry
# of the largest count <= the call's (the block halved until it divides the row). Measured on an
# H200: at 128 programs 128-slot blocks with 8 warps and 3 stages beat 64 / 4 / 2 by
# 0.6 %; at 512 (batch 256) 64 / 4 / 2 beat every other tiling tried (1.79 vs 1.80-1.93 ms/step).
WHOLE_ROW_TILINGS: dict[int, tuple[int, int, int]] = {1: (128, 8, 3), 512: (64, 4, 2)}


def _chunk(length: int, programs_per_chunk: int) -> int:
  """Slots per chunk: all of them with >= WHOLE_ROW_PROGRAMS programs; else the largest power
  of two <= 128 dividing `length` that still leaves ~256 programs (two waves of a large GPU), so
  small batches spread over the chunks too."""
  if programs_per_chunk >= WHOLE_ROW_PROGRAMS:
    return length
  best = 16
  for chunk in (32, 64, 128):
    if length % chunk == 0 and programs_per_chunk * (length // chunk) >= 256:
      best = chunk
  return best


def _kernel(*refs, block: int, scale: float, group: int, rope: bool, bias: bool, whole: bool,
            rows: int, write_kv: int | None, kv_heads: int):
  """One (row, KV head, chunk): attention of the group's query heads (a tile of `rows` >= G).

  refs: q [H', D] (the row's queries: before their bias with `bias`, before RoPE with `rope`);
  k, v [chunk, D]; start, length scalars; with `rope` the row's cos and sin [D]; with `bias` the
  bias of q's rows [H', D]. Writes, with `whole` (the chunk is the whole row), the attention
  output of the group's G heads (o [G, D] in v's dtype); else the unnormalized output o [rows, D]
  (float32), the running max m [rows] and the softmax denominator l [rows] of the chunk.

  With `write_kv` = H (the number of query heads), q is the fused projection: this step's key
  and value of KV head j are its rows H + j and H + K + j. The program whose chunk holds slot
  length - 1 writes them there (biased, the key rotated) through the last two refs (k, v
  again, aliased to the inputs), and every program takes that slot from registers, not memory.
  """
  refs = list(refs)
  q_ref, k_ref, v_ref, start_ref, length_ref = refs[:5]
  cos_ref, sin_ref = refs[5:7] if rope else (None, None)
  bias_ref = refs[7 if rope else 5] if bias else None
  if write_kv is not None:
    refs, k_out_ref, v_out_ref = refs[:-2], refs[-2], refs[-1]
  chunk = k_ref.shape[0]
  d = k_ref.shape[1]
  first_slot = pl.program_id(2) * chunk
  new_slot = length_ref[()] - 1 - first_slot                   # chunk-relative
  lo = jnp.maximum(start_ref[()], first_slot) - first_slot      # chunk-relative [lo, hi)
  hi = jnp.minimum(length_ref[()] - (write_kv is not None), first_slot + chunk) - first_slot

  def load(first, count, tile, rotate):
    """Rows [first, first + count) of q as a [tile, D] tile (zeros past count), biased and, with
    `rotate`, rotated: in float32, rounded to q's dtype after the bias, as the decoder does."""
    at = (pl.ds(first, tile), pl.ds(0, d))
    mask = jnp.broadcast_to((jnp.arange(tile) < count)[:, None], (tile, d))
    x = plgpu.load(q_ref.at[at], mask=mask, other=0)
    if bias:
      x = (x.astype(jnp.float32) + plgpu.load(bias_ref.at[at], mask=mask, other=0).astype(
          jnp.float32)).astype(x.dtype)
    if rotate:
      # rotate_half(x) = x @ R for the signed permutation R (exact: one +-x entry per output),
      # so x stays one tile (a tensor-core dot needs >= 16 rows).
      half = d // 2
      i, j = jnp.arange(d)[:, None], jnp.arange(d)[None, :]
      perm = jnp.where((j < half) & (i == j + half), -1.0,
                       jnp.where((j >= half) & (i == j - half), 1.0, 0.0)).astype(x.dtype)
      rotated = jnp.dot(x, perm, preferred_element_type=jnp.float32)
      x = x.astype(jnp.float32) * cos_ref[...][None, :] + rotated * sin_ref[...][None, :]
    return x.astype(k_ref.dtype)

  # The group's query heads are rows [j * G, j * G + G) of q; rows past G load as zeros (they
  # pad the tile to G' rows and are never stored, or dropped after the merge).
  kv_head = pl.program_id(1)
  q = load(kv_head * group, group, rows, rope)
  mask = jnp.broadcast_to((jnp.arange(rows) < group)[:, None], (rows, d))

  def body(i, carry):
    acc, m, l = carry
    slots = pl.ds(i * block, block)
    k = k_ref[slots, :]
    s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) * scale     # [G', block]
    pos = i * block + jnp.arange(block)
    s = jnp.where(((pos >= lo) & (pos < hi))[None, :], s, _NEG_INF)
    # Every block in [lo // block, cdiv(hi, block)) holds an attended slot, so m_new is finite
    # and the masked entries get weight 0.
    m_new = jnp.maximum(m, s.max(axis=1))
    correction = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[:, None])
    v = v_ref[slots, :]
    acc = acc * correction[:, None] + jnp.dot(p.astype(v.dtype), v,
                                              preferred_element_type=jnp.float32)
    return acc, m_new, l * correction + p.sum(axis=1)

  init = (jnp.zeros((rows, d), jnp.float32), jnp.full((rows,), _NEG_INF, jnp.float32),
          jnp.zeros((rows,), jnp.float32))
  if write_kv is not None:
    # This step's key and value: row 0 of a 16-row tile (a dot's smallest), summed down to [D].
    new_k = load(write_kv + kv_head, 1, _MIN_ROWS, rope).sum(axis=0)
    new_v = load(write_kv + kv_heads + kv_head, 1, _MIN_ROWS, False).sum(axis=0)
    owner = (new_slot >= 0) & (new_slot < chunk)
    at = (pl.ds(jnp.clip(new_slot, 0, chunk - 1), 1), pl.ds(0, d))
    store_mask = jnp.broadcast_to(owner, (1, d))
    plgpu.store(k_out_ref.at[at], new_k[None, :].astype(k_out_ref.dtype), mask=store_mask)
    plgpu.store(v_out_ref.at[at], new_v[None, :].astype(v_out_ref.dtype), mask=store_mask)
    # The owner's online softmax starts from the new slot (weight exp(0) = 1; its score as the
    # block dot computes one: products in q and k's dtype, summed in float32); the loop below
    # then covers the slots before it.
    s_new = jnp.sum(q.astype(jnp.float32) * new_k.astype(jnp.float32)[None, :], axis=1) * scale
    init = (jnp.where(owner, jnp.broadcast_to(new_v.astype(jnp.float32)[None, :], (rows, d)),
                      init[0]),
            jnp.where(owner, s_new, init[1]), jnp.where(owner, 1.0, init[2]))
  # lo >= hi (a chunk outside the row's slots) runs no iteration: m stays -1e30, l 0 (unless
  # the chunk holds the new slot).
  acc, m, l = jax.lax.fori_loop(lo // block, (hi + block - 1) // block, body, init)
  if whole:  # every row attends >= 1 slot, so l > 0 for the G real heads; the rest are not stored
    (o_ref,) = refs[-1:]
    plgpu.store(o_ref.at[pl.ds(0, rows), pl.ds(0, d)],
                (acc / jnp.maximum(l, 1e-30)[:, None]).astype(o_ref.dtype), mask=mask)
    return
  o_ref, m_ref, l_ref = refs[-3:]
  o_ref[...] = acc
  m_ref[...] = m
  l_ref[...] = l


def _local(q, k, v, start, length, rope, q_bias, group: int, interpret: bool,
           chunk: int | None, block: int | None, num_warps: int | None,
           num_stages: int | None, write_kv: bool):
  """decode_attention on one shard (no mesh): `group` query heads per KV head."""
  b, h, d = q.shape
  kv, s = k.shape[1], k.shape[2]
  g = group
  heads = kv * g
  rows = max(_MIN_ROWS, pl.next_power_of_2(g))
  # The interpreter slices whole tiles out of q (the GPU kernel's masked loads touch no memory
  # past the rows they keep): give it the rows the last tile reaches.
  reach = (kv - 1) * g + rows
  if write_kv:
    if h != heads + 2 * kv:
      raise ValueError(f"write_kv needs q/k/v rows [B, {heads} + 2 * {kv}, D], got {q.shape}")
    reach = max(reach, heads + 2 * kv - 1 + _MIN_ROWS)
  if interpret and reach > h:
    q = jnp.pad(q, ((0, 0), (0, reach - h), (0, 0)))
    if q_bias is not None:
      q_bias = jnp.pad(q_bias, ((0, reach - q_bias.shape[0]), (0, 0)))
  if chunk is None:
    chunk = _chunk(s, b * kv)
    if chunk == s:
      wanted, warps, stages = WHOLE_ROW_TILINGS[max(n for n in WHOLE_ROW_TILINGS
                                                     if n <= b * kv)]
      while s % wanted:  # s is a multiple of 16
        wanted //= 2
      block, num_warps, num_stages = block or wanted, num_warps or warps, num_stages or stages
  num_warps, num_stages = num_warps or 4, num_stages or 2
  block = block or next(n for n in (64, 32, 16) if chunk % n == 0)
  block = min(block, chunk)
  if s % chunk or chunk % block:
    raise ValueError(f"chunk {chunk} must divide the cache length {s} and block {block} the chunk")
  splits = s // chunk
  whole = splits == 1
  kernel = functools.partial(_kernel, block=block, scale=1.0 / math.sqrt(d), group=g,
                             rope=rope is not None, bias=q_bias is not None, whole=whole,
                             rows=rows, write_kv=heads if write_kv else None, kv_heads=kv)
  row = pl.BlockSpec((None,), lambda i, j, c: (i,))
  cache_block = pl.BlockSpec((None, None, chunk, d), lambda i, j, c: (i, j, c, 0))
  in_specs = [pl.BlockSpec((None,) + q.shape[1:], lambda i, j, c: (i, 0, 0)), cache_block,
              cache_block, row, row]
  args = [q, k, v, start.astype(jnp.int32), length.astype(jnp.int32)]
  if rope is not None:
    in_specs += [pl.BlockSpec((None, d), lambda i, j, c: (i, 0))] * 2
    args += [x.astype(jnp.float32) for x in rope]
  if q_bias is not None:
    in_specs.append(pl.BlockSpec(q_bias.shape, lambda i, j, c: (0, 0)))
    args.append(q_bias)
  if whole:
    # G rows per group on the GPU (the masked store writes no others: the output is [B, H, D]
    # as it stands); the interpreter stores whole tiles, so it gets `rows` and a slice after.
    out_rows = rows if interpret else g
    out_specs = [pl.BlockSpec((None, None, out_rows, d), lambda i, j, c: (i, j, 0, 0))]
    out_shape = [jax.ShapeDtypeStruct((b, kv, out_rows, d), v.dtype)]
  else:
    out_specs = [pl.BlockSpec((None, None, None, rows, d), lambda i, j, c: (i, j, c, 0, 0)),
                 pl.BlockSpec((None, None, None, rows), lambda i, j, c: (i, j, c, 0)),
                 pl.BlockSpec((None, None, None, rows), lambda i, j, c: (i, j, c, 0))]
    out_shape = [jax.ShapeDtypeStruct((b, kv, splits, rows, d), jnp.float32),
                 jax.ShapeDtypeStruct((b, kv, splits, rows), jnp.float32),
                 jax.ShapeDtypeStruct((b, kv, splits, rows), jnp.float32)]
  aliases = {}
  if write_kv:  # k and v come back as outputs, updated in place
    aliases = {1: len(out_shape), 2: len(out_shape) + 1}
    out_specs += [cache_block, cache_block]
    out_shape += [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
  results = pl.pallas_call(
      kernel,
      grid=(b, kv, splits),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      input_output_aliases=aliases,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name="rlthink_decode_attention",
  )(*args)
  if whole:
    out = results[0][:, :, :g].reshape(b, heads, d)
  else:
    # Merge the chunks: weights exp(m_c - max_c m_c); empty chunks (l = 0, m = -1e30) weigh 0.
    # (XLA makes this two kernels; slicing off the padding rows first, or storing only the G
    # real ones, made it four: measured, docs/benchmarks.md.)
    o, m, l = results[:3]
    top = m.max(axis=2, keepdims=True)
    w = jnp.exp(m - top)
    denom = (w * l).sum(axis=2)
    out = (w[..., None] * o).sum(axis=2) / jnp.where(denom > 0, denom, 1.0)[..., None]
    out = out[:, :, :g].reshape(b, heads, d).astype(v.dtype)
  return (out, results[-2], results[-1]) if write_kv else out


def decode_attention(q: jax.Array, k: jax.Array, v: jax.Array, start: jax.Array,
                     length: jax.Array, mesh: Mesh | None = None,
                     rope: tuple[jax.Array, jax.Array] | None = None,
                     q_bias: jax.Array | None = None, heads: int | None = None,
                     interpret: bool | None = None, chunk: int | None = None,
                     block: int | None = None, num_warps: int | None = None,
                     num_stages: int | None = None, write_kv: bool = False):
  """Attention of one query per head over the cache slots [start, length) of each row.

  Args:
    q: [B, H, D] queries (H a multiple of K), or [B, H', D] with the H query heads first (the
      decoder passes its fused q/k/v projection: no copy of q) and `heads` = H.
    k, v: [B, K, S, D] the cache; S must satisfy `supported_length`.
    start, length: int32[B]: each row attends to slots start <= s < length (length > start).
    mesh: shards the call like the decoder's activations; None for one device.
    rope: (cos, sin), float32 [B, D] each (the frequencies repeated for both halves): q is not
      yet rotated; the kernel applies rotate-half RoPE (`attention.apply_rope`).
    q_bias: [H, D]: q is before its bias; the kernel adds it (before RoPE). With these two the
      decoder hands over its q/k/v projection as it comes out of the matmul: no pass over q.
    write_kv: q is the fused projection [B, H + 2K, D] (query heads, then this step's keys, then
      its values; `q_bias`, if given, [H + 2K, D] for all of them): the kernel also writes the
      step's keys (biased, rotated with `rope`) and values into slot length - 1 of k and v, in
      place, and attends to them there (so no pass writes the cache per layer).
    interpret: run Pallas' interpreter; default: on any backend but GPU.
    chunk, block, num_warps, num_stages: the tiling: slots per program (default `_chunk`'s
      choice: whole rows from WHOLE_ROW_PROGRAMS programs on), slots per inner iteration and
      warps per program, Triton's software-pipelining stages (defaults: for whole rows
      WHOLE_ROW_TILINGS', else the largest of 64, 32, 16 dividing the chunk, 4 and 2).

  Returns:
    [B, H, D] in v's dtype (softmax in float32, as `attention.dot_product_attention`); with
    `write_kv`, (that, k, v) with the new slot written (k and v are donated to the kernel).
  """
  if not supported_length(k.shape[2]):
    raise ValueError(f"decode_attention needs a cache length that is a multiple of 16, got "
                     f"{k.shape[2]}")
  heads = q.shape[1] if heads is None else heads
  if heads % k.shape[1] or heads > q.shape[1]:
    raise ValueError(f"{heads} query heads (of q's {q.shape[1]} rows) do not group over "
                     f"{k.shape[1]} KV heads")
  bias_rows = heads + 2 * k.shape[1] if write_kv else heads
  if q_bias is not None and q_bias.shape != (bias_rows, q.shape[2]):
    raise ValueError(f"q_bias must be [{bias_rows}, {q.shape[2]}], got {q_bias.shape}")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  run = functools.partial(_local, group=heads // k.shape[1], interpret=interpret, chunk=chunk,
                          block=block, num_warps=num_warps, num_stages=num_stages,
                          write_kv=write_kv)
  if mesh is None or mesh.size == 1:
    return run(q, k, v, start, length, rope, q_bias)
  cache_spec = sharding.logical_to_spec(("batch", "kv_heads", "cache_length", "head_dim"),
                                        k.shape, mesh)
  rows, head_axis = cache_spec[0], cache_spec[1]  # query heads follow their KV heads' sharding
  if head_axis is not None and heads != q.shape[1]:
    raise ValueError("q with rows past its query heads cannot be split over a tensor axis")
  q_spec = PartitionSpec(rows, head_axis, None)
  row_spec = PartitionSpec(rows)
  table_spec = PartitionSpec(rows, None)
  bias_spec = PartitionSpec(head_axis, None)
  if write_kv and head_axis is not None:
    raise ValueError("write_kv needs the KV heads unsplit (a mesh without a tensor axis)")
  return jax.shard_map(run, mesh=mesh, in_specs=(q_spec, cache_spec, cache_spec, row_spec,
                                                 row_spec, table_spec, bias_spec),
                       out_specs=(q_spec, cache_spec, cache_spec) if write_kv else q_spec,
                       check_vma=False)(q, k, v, start, length, rope, q_bias)


def reference(q, k, v, start, length, rope=None, q_bias=None, write_kv=False):
  """float64 numpy attention with the same contract (for tests): [B, H, D], or with `write_kv`
  (out, k, v) with the new slot written."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, h, d = q.shape
  if q_bias is not None:
    q = q + np.asarray(q_bias, np.float64)

  def rotate(x):
    if rope is None:
      return x
    cos, sin = (np.asarray(t, np.float64)[:, None, :d // 2] for t in rope)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

  kv = k.shape[1]
  if write_kv:
    h -= 2 * kv
    new_k, new_v = rotate(q[:, h:h + kv]), q[:, h + kv:]
    k, v = k.copy(), v.copy()
    for i in range(b):
      k[i, :, length[i] - 1], v[i, :, length[i] - 1] = new_k[i], new_v[i]
  q = rotate(q[:, :h])
  g = h // kv
  out = np.zeros((b, h, d))
  for i in range(b):
    for j in range(h):
      keys, values = k[i, j // g, start[i]:length[i]], v[i, j // g, start[i]:length[i]]
      s = keys @ q[i, j] / np.sqrt(d)
      p = np.exp(s - s.max())
      out[i, j] = p @ values / p.sum()
  return (out, k, v) if write_kv else out
