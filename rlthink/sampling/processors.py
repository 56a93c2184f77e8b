"""Next-token selection: temperature, top-k and top-p (nucleus) filtering, and the draw itself.

Pure functions of float32 logits [N, V], used inside the decode loop. The order is the usual one
(temperature, then top-k, then top-p on the top-k-renormalized distribution), so the sampling
distribution is `softmax(process_logits(logits, ...))`. On GPU the draw's one pass over the
logits is a Pallas (Triton) kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.sharding import Mesh, PartitionSpec

from rlthink import sharding

_MASKED = -jnp.inf  # filtered tokens: exp(-inf) = 0 exactly, so they are never drawn


def process_logits(logits: jax.Array, temperature: jax.Array | None, top_k: int | None,
                   top_p: jax.Array | None) -> jax.Array:
  """The logits of the sampling distribution: float32[N, V], -inf where a filter removed a token.

  Args:
    logits: float32[N, V] raw next-token logits.
    temperature: float32 scalar > 0 (greedy decoding does not come here); None for 1.
    top_k: keep the k largest logits (ties with the k-th are kept too); None keeps all. Static.
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p (always at
      least the most likely one); None keeps all.
  """
  if temperature is None and top_k is None and top_p is None:
    return logits  # the policy's own distribution (callers may test `is logits`)
  x = logits.astype(jnp.float32)
  if temperature is not None:
    x = x / temperature
  if top_k is not None:
    top_values = jax.lax.top_k(x, top_k)[0]                    # [N, k], descending
    x = jnp.where(x < top_values[:, -1:], _MASKED, x)
  if top_p is not None:
    # Sorting only the top-k values is enough when top-k ran first; otherwise sort the vocabulary.
    ordered = top_values if top_k is not None else -jnp.sort(-x, axis=-1)
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs           # mass of strictly likelier tokens
    keep = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(ordered, keep - 1, axis=-1)
    x = jnp.where(x < threshold, _MASKED, x)
  return x


CHUNK = 128  # vocabulary chunk of the two-level draw


def _first_above(cdf: jax.Array, target: jax.Array) -> jax.Array:
  """Index of the first entry of the non-decreasing cdf [N, M] that exceeds target [N]."""
  return jnp.sum(cdf <= target[:, None], axis=1).astype(jnp.int32)


def draw(keys: jax.Array, logits: jax.Array, **options) -> jax.Array:
  """One token per row from softmax(logits): keys [N] (one key per row), logits [N, V] -> int32[N].

  See `draw_with_logprob` (and its options), which also returns the drawn token's log-probability.
  """
  return draw_with_logprob(keys, logits, **options)[0]


def _chunk_softmax_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per chunk of x [N, M, c]: its max m and sum(exp(x - m)), both [N, M], in one read of x.

  A variadic reduction whose combiner is the online-softmax merge, so XLA makes one pass over
  the logits (a max and then a sum of exponentials would read them twice). An all -inf chunk
  gives (-inf, 0).
  """
  def merge(a, b):
    (m1, s1), (m2, s2) = a, b
    m = jnp.maximum(m1, m2)
    # m1 == m covers m1 = m = -inf, where exp(m1 - m) would be exp(nan).
    scale = lambda mi, si: jnp.where(mi == m, si, si * jnp.exp(mi - m))
    return m, scale(m1, s1) + scale(m2, s2)

  ones = jnp.where(x > _MASKED, 1.0, 0.0).astype(jnp.float32)  # exp(x - x), 0 for a masked token
  return jax.lax.reduce((x, ones), (jnp.float32(_MASKED), jnp.float32(0)), merge, (2,))


CHUNKS_PER_PROGRAM = 32  # chunks of one row per program of the GPU kernel ([32, 128] float32)


def _stats_kernel(x_ref, m_ref, s_ref, *, chunks: int):
  """Chunks [j * CHUNKS_PER_PROGRAM, ...) of one row: x [M, c] -> m, s [M] (those chunks)."""
  first = pl.program_id(1) * CHUNKS_PER_PROGRAM
  at = pl.ds(first, CHUNKS_PER_PROGRAM)
  valid = first + jnp.arange(CHUNKS_PER_PROGRAM) < chunks
  x = plgpu.load(x_ref.at[at, :], mask=jnp.broadcast_to(valid[:, None], (valid.shape[0],
                                                                            x_ref.shape[1])),
                 other=_MASKED)
  m = x.max(axis=1)
  s = jnp.sum(jnp.exp(x - jnp.where(m > _MASKED, m, 0.0)[:, None]), axis=1)  # exp(-inf) = 0
  plgpu.store(m_ref.at[at], m, mask=valid)
  plgpu.store(s_ref.at[at], s, mask=valid)


def _chunk_softmax_stats_kernel(x: jax.Array, interpret: bool) -> tuple[jax.Array, jax.Array]:
  """`_chunk_softmax_stats` as one Pallas kernel: one exponential per logit, not the variadic
  reduction's two per merge (on an H200 at [256, 151936] XLA's single pass took 99 us, 2.5x
  the time of reading the logits once; docs/benchmarks.md)."""
  n, chunks, c = x.shape
  programs = pl.cdiv(chunks, CHUNKS_PER_PROGRAM)
  if interpret:  # the interpreter slices whole tiles: give it the chunks the last one reaches
    x = jnp.pad(x, ((0, 0), (0, programs * CHUNKS_PER_PROGRAM - chunks), (0, 0)),
                constant_values=_MASKED)
  stats = jax.ShapeDtypeStruct((n, x.shape[1]), jnp.float32)
  m, s = pl.pallas_call(
      functools.partial(_stats_kernel, chunks=chunks),
      grid=(n, programs),
      in_specs=[pl.BlockSpec((None,) + x.shape[1:], lambda i, j: (i, 0, 0))],
      out_specs=[pl.BlockSpec((None, x.shape[1]), lambda i, j: (i, 0))] * 2,
      out_shape=[stats, stats],
      compiler_params=plgpu.CompilerParams(num_warps=4),
      interpret=interpret,
      name="rlthink_draw_stats",
  )(x)
  return m[:, :chunks], s[:, :chunks]


def _stats(x: jax.Array, mesh: Mesh | None, kernel: bool | None):
  """_chunk_softmax_stats of x [N, M, c], by XLA or (kernel) by Pallas, sharded like x: rows over
  the batch axes and, on a mesh that splits the vocabulary (tensor parallel), the chunks over
  its axis, so each device reads only its own logits and no device gathers them. That needs the
  chunk count to divide by the axis size (Llama 3's 1002 chunks over 2 devices do; Qwen2.5's
  1187 do not: there the logits are gathered across the axis first)."""
  on_gpu = jax.default_backend() == "gpu"
  if not (on_gpu if kernel is None else kernel):
    return _chunk_softmax_stats(x)
  run = functools.partial(_chunk_softmax_stats_kernel, interpret=not on_gpu)
  if mesh is None or mesh.size == 1:
    return run(x)
  spec = sharding.logical_to_spec(("batch", "vocab", None), x.shape, mesh)
  return jax.shard_map(run, mesh=mesh, in_specs=spec, out_specs=(PartitionSpec(*spec[:2]),) * 2,
                       check_vma=False)(x)


def draw_with_logprob(keys: jax.Array, logits: jax.Array, mesh: Mesh | None = None,
                      kernel: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """One token per row from softmax(logits), and its log-probability under that distribution.

  keys [N] (one key per row), logits [N, V] -> (int32[N], float32[N]).

  Inverse-CDF sampling in two levels, with two uniforms per row: a chunk of CHUNK tokens by the
  cumulative chunk masses, then a token within it. It reads the logits once (each chunk's max
  and sum of exponentials in one reduction, `_chunk_softmax_stats`) and needs no random number
  per vocabulary entry; the chunk masses also give the log-partition, so the log-probability
  costs no further pass over the vocabulary. Tokens of probability 0 (-inf logits) are never
  drawn: each target lies strictly below the total mass it is compared with.

  Each row draws from its own key only, so a row's token does not depend on the other rows, the
  batch size or the mesh.

  kernel: make the pass over the logits with the Pallas kernel (default: on GPU; elsewhere it
  runs in Pallas' interpreter); mesh: the mesh the rows are sharded over (the kernel runs per
  shard).
  """
  n, v = logits.shape
  c = min(CHUNK, v)
  x = logits.astype(jnp.float32)
  if v % c:
    x = jnp.pad(x, ((0, 0), (0, c - v % c)), constant_values=_MASKED)
  x = x.reshape(n, -1, c)                                       # [N, chunks, c]
  chunk_max, chunk_sums = _stats(x, mesh, kernel)               # [N, chunks] each
  top = jnp.max(chunk_max, axis=1)                              # [N], finite: some token is allowed
  uniforms = jax.vmap(lambda key: jax.random.uniform(key, (2,)))(keys)   # [N, 2] in [0, 1)

  def pick(masses, u):  # masses [N, M] >= 0 with a positive sum -> index of mass drawn
    cdf = jnp.cumsum(masses, axis=1)
    total = cdf[:, -1]
    target = jnp.minimum(u * total, jnp.nextafter(total, 0.0))  # < total, so never a 0-mass entry
    return _first_above(cdf, target)

  chunk_masses = chunk_sums * jnp.exp(chunk_max - top[:, None])  # exp(-inf) = 0 for empty chunks
  chunk = pick(chunk_masses, uniforms[:, 0])
  within = jnp.take_along_axis(x, chunk[:, None, None], axis=1)[:, 0]   # [N, c]
  index = pick(jnp.exp(within - top[:, None]), uniforms[:, 1])
  picked = jnp.take_along_axis(within, index[:, None], axis=1)[:, 0]
  logprob = picked - top - jnp.log(jnp.sum(chunk_masses, axis=1))
  return chunk * c + index, logprob
