"""Small-batch decode matmuls as Pallas (Triton) kernels, with the ops around them fused in.

At batch 1 a decode step is a chain of one-row matmuls, each reading its weight once: XLA lowers
each to a reduction kernel and runs the norms, biases, activations and residual adds as kernels of
their own, so a layer is ~17 kernels whose fixed costs, not their bytes, set the step time. This
kernel computes rows of `x @ w.T` for a weight stored [N, K] (input axis minor, the sampler's
layout, `decoder.transpose_for_decode`) and takes in what XLA would run around it:

- `norm_scale`: RMS-normalizes each row of x first (the layer's input or post-attention norm);
- `bias`: adds a bias [N] (Qwen's q/k/v biases);
- `residual`: adds a residual [M, N] (the attention output and MLP down projections);
- a stacked weight [2, N, K] gives `silu(x @ w[0].T) * (x @ w[1].T)` (the MLP's gate and up).

Every intermediate is rounded to x's dtype where the XLA path rounds it, so both paths agree to
the compute dtype's precision. Each program computes `block_n` outputs of one row, looping over
the input axis in `block_k` slices; rows are a grid axis (each re-reads the weight block, from L2
after the first), so the kernel is for a few rows per device (`rlthink.sample` picks it at batch
<= MAX_ROWS). On a non-GPU backend it runs in Pallas' interpreter (for tests); with a mesh it runs
per shard over the batch axes, weights replicated (not with a tensor axis).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.sharding import Mesh, PartitionSpec

from rlthink import sharding

MAX_ROWS = 4  # rows per device up to which `rlthink.sample` uses the kernel (docs/benchmarks)
BLOCK_N, BLOCK_K, NUM_WARPS = 16, 256, 4  # default tiling (docs/benchmarks/decode_kernels.py)


def _kernel(*refs, block_k: int, k_dim: int, eps: float, norm: bool, bias: bool,
            residual: bool, gated: bool):
  """One (row, block of outputs). refs: x [K], (scale [K]), w [N, K] or [2, N, K], (bias
  [block_n]), (residual [block_n]), out [block_n]."""
  refs = list(refs)
  x_ref = refs.pop(0)
  scale_ref = refs.pop(0) if norm else None
  w_ref = refs.pop(0)
  bias_ref = refs.pop(0) if bias else None
  res_ref = refs.pop(0) if residual else None
  (o_ref,) = refs
  dtype = x_ref.dtype
  block_n = o_ref.shape[0]
  n0 = pl.program_id(1) * block_n
  steps = -(-k_dim // block_k)
  ragged = k_dim % block_k != 0

  def load(ref, index, ks):  # a [block_k] or [block_n, block_k] block; past K reads 0
    if not ragged:
      return ref[index]
    shape = tuple(i.size for i in index if isinstance(i, pl.Slice))
    valid = ks.start + jnp.arange(block_k) < k_dim
    return plgpu.load(ref.at[index], mask=jnp.broadcast_to(valid, shape), other=0)

  def x_slice(c):
    ks = pl.ds(c * block_k, block_k)
    return load(x_ref, (ks,), ks).astype(jnp.float32), ks

  if norm:
    def sum_squares(c, acc):
      xk, _ = x_slice(c)
      return acc + jnp.sum(xk * xk)
    inv = jax.lax.rsqrt(jax.lax.fori_loop(0, steps, sum_squares, jnp.float32(0)) / k_dim + eps)

  rows = pl.ds(n0, block_n)

  def body(c, acc):
    xk, ks = x_slice(c)
    if norm:  # the decoder's RMSNorm: normalize and scale in float32, round to the compute dtype
      xk = (xk * inv * load(scale_ref, (ks,), ks).astype(jnp.float32)).astype(dtype)
      xk = xk.astype(jnp.float32)
    # Elementwise products accumulate per lane; one reduction over the lanes at the end.
    if gated:
      g = load(w_ref, (jnp.int32(0), rows, ks), ks).astype(jnp.float32)
      u = load(w_ref, (jnp.int32(1), rows, ks), ks).astype(jnp.float32)
      return acc[0] + g * xk[None, :], acc[1] + u * xk[None, :]
    return acc + load(w_ref, (rows, ks), ks).astype(jnp.float32) * xk[None, :]

  zero = jnp.zeros((block_n, block_k), jnp.float32)
  acc = jax.lax.fori_loop(0, steps, body, (zero, zero) if gated else zero)
  r = lambda v: v.astype(dtype).astype(jnp.float32)  # round where the XLA path holds `dtype`
  if gated:
    g, u = r(jnp.sum(acc[0], axis=1)), r(jnp.sum(acc[1], axis=1))
    y = r(r(g * r(jax.nn.sigmoid(g))) * u)
  else:
    y = r(jnp.sum(acc, axis=1))
    if bias:
      y = r(y + bias_ref[...].astype(jnp.float32))
    if residual:
      y = r(res_ref[...].astype(jnp.float32) + y)
  o_ref[...] = y.astype(o_ref.dtype)


def _local(x, w, norm_scale, bias, residual, *, eps, interpret, block_n, block_k, num_warps):
  m, k_dim = x.shape
  gated = w.ndim == 3
  n = w.shape[-2]
  if n % block_n:
    raise ValueError(f"block_n {block_n} does not divide the {n} outputs")
  kernel = functools.partial(_kernel, block_k=block_k, k_dim=k_dim, eps=eps,
                             norm=norm_scale is not None, bias=bias is not None,
                             residual=residual is not None, gated=gated)
  whole = lambda a: pl.BlockSpec(a.shape, lambda i, j: (0,) * a.ndim)
  args = [x]
  specs = [pl.BlockSpec((None, k_dim), lambda i, j: (i, 0))]
  if norm_scale is not None:
    args.append(norm_scale)
    specs.append(whole(norm_scale))
  args.append(w)
  specs.append(whole(w))
  if bias is not None:
    args.append(bias)
    specs.append(pl.BlockSpec((block_n,), lambda i, j: (j,)))
  if residual is not None:
    args.append(residual)
    specs.append(pl.BlockSpec((None, block_n), lambda i, j: (i, j)))
  return pl.pallas_call(
      kernel,
      grid=(m, n // block_n),
      in_specs=specs,
      out_specs=pl.BlockSpec((None, block_n), lambda i, j: (i, j)),
      out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=2),
      interpret=interpret,
      name="rlthink_decode_matmul",
  )(*args)


def decode_matmul(x: jax.Array, w: jax.Array, *, norm_scale: jax.Array | None = None,
                  eps: float = 1e-6, bias: jax.Array | None = None,
                  residual: jax.Array | None = None, mesh: Mesh | None = None,
                  interpret: bool | None = None, block_n: int = BLOCK_N,
                  block_k: int = BLOCK_K, num_warps: int = NUM_WARPS) -> jax.Array:
  """[M, N] = x @ w.T with the fused ops of the module doc, in x's dtype.

  Args:
    x: [M, K] rows (M small: the rows of a decode step on one device).
    w: [N, K], or [2, N, K] for the gated MLP input `silu(x @ w[0].T) * (x @ w[1].T)`.
    norm_scale: [K]: x is RMS-normalized (epsilon `eps`) and scaled first.
    bias: [N] added to the product; residual: [M, N] added last. Neither with a gated w.
    mesh: shards the rows over the batch axes (weights replicated); None for one device.
    interpret: run Pallas' interpreter; default: on any backend but GPU.
    block_n, block_k, num_warps: the tiling (outputs per program, inputs per loop step, warps).
  """
  if x.ndim != 2 or w.ndim not in (2, 3) or w.shape[-1] != x.shape[1] or (
      w.ndim == 3 and w.shape[0] != 2):
    raise ValueError(f"decode_matmul takes x [M, K] and w [N, K] or [2, N, K], got {x.shape} and "
                     f"{w.shape}")
  if w.ndim == 3 and (bias is not None or residual is not None):
    raise ValueError("a gated (stacked [2, N, K]) weight takes no bias or residual")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  run = functools.partial(_local, eps=eps, interpret=interpret, block_n=block_n,
                          block_k=block_k, num_warps=num_warps)
  if mesh is None or mesh.size == 1:
    return run(x, w, norm_scale, bias, residual)
  rows = PartitionSpec(sharding.logical_to_spec(("batch", None), x.shape, mesh)[0], None)
  return jax.shard_map(
      lambda x, w, s, b, r: run(x, w, s, b, r), mesh=mesh,
      in_specs=(rows, PartitionSpec(), PartitionSpec(), PartitionSpec(), rows),
      out_specs=rows, check_vma=False)(x, w, norm_scale, bias, residual)


def reference(x, w, norm_scale=None, eps=1e-6, bias=None, residual=None) -> np.ndarray:
  """float64 numpy with the same contract, without the intermediate rounding (for tests)."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  if norm_scale is not None:
    x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * np.asarray(norm_scale,
                                                                                np.float64)
  if w.ndim == 3:
    g, u = x @ w[0].T, x @ w[1].T
    return g / (1 + np.exp(-g)) * u
  y = x @ w.T
  if bias is not None:
    y = y + np.asarray(bias, np.float64)
  if residual is not None:
    y = y + np.asarray(residual, np.float64)
  return y
