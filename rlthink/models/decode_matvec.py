"""The decode step's matmuls for one row per device, as Pallas (Triton) kernels with the layer's
elementwise work fused in.

With one row a decode-step matmul is a matrix-vector product: it reads the whole weight once and
does almost no arithmetic, so its time is the weight's bytes plus a kernel launch. XLA runs each
residual add and each RMSNorm as kernels of their own (an add, a reduction, an elementwise pass)
next to the matmul; at batch 1 those small kernels cost as much as the weight reads
(docs/benchmarks.md). `matvec` is one kernel per matmul that also

- adds the residual first (`add`): the input is x + add, rounded as the decoder's add, and the
  sum comes back as a second output (the next residual);
- RMS-normalizes that input (`norm_scale`): every program recomputes the row's sum of squares
  (the row is a few KB), then rounds the normed input to the compute dtype exactly as
  `decoder.RMSNorm` does before multiplying;
- for a fused gate/up weight (`silu_mul`), returns silu(x @ gate) * (x @ up).

The decode step (`decode.few_rows_step`) runs the layer's q/k/v and gate/up matmuls this way,
down too when its weight is large (LAYER_KERNELS, KERNEL_MIN_SIZE), and leaves the o-projection
(and a small down) to XLA (measured faster there), their residual adds done by the next kernel.
Weights are [N, K] with the input axis K minor
(`decode.transpose_for_decode`); each program owns BLOCK_N outputs and walks K in BLOCK_K steps
(unrolled: every load in flight at once), accumulating products in float32 elementwise and
summing once at the end. On a non-GPU backend the kernel runs in Pallas' interpreter (for
tests). With a mesh it runs per shard: rows over the batch axes, the weight whole on every
device.
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

# Rows per device up to which the decoder uses these kernels. Measured on an H200 (qwen2.5-0.5b,
# docs/benchmarks.md): at 4 rows the step with the kernels took 1.22 ms, with XLA's 0.99.
MAX_ROWS = 1
_KERNEL_MAX_ROWS = 8  # the kernel's limit (one unrolled pass per row)

# The decoder layer's matmuls that run as kernels, with their tiling (BLOCK_N, BLOCK_K, warps);
# a role left out ("o"), or whose weight has fewer elements than KERNEL_MIN_SIZE's entry, runs
# as XLA ops (`matvec_xla`, the same numbers). Measured in place at batch 1 on an H200
# (docs/benchmarks.md): input norm + q/k/v 3.8 us per layer (XLA 4.7 in 3 kernels),
# norm + gate/up + SiLU-multiply 7.5 (XLA 9.4 in 4); the o-projection (8, 128, 8) 2.5 vs 2.1;
# down (4, 256, 8) on qwen2.5-0.5b's [896, 4864] weight 6.3 vs 3.8 us, on qwen2.5-1.5b's
# [1536, 8960] 1.51 vs 1.55 ms per step: a kernel from KERNEL_MIN_SIZE's 8M elements on.
LAYER_KERNELS: dict[str, tuple[int, int, int]] = {"qkv": (8, 128, 4), "gate_up": (8, 128, 4),
                                                  "down": (4, 256, 8)}
KERNEL_MIN_SIZE: dict[str, int] = {"down": 8 * 2**20}


def supported(rows: int, k: int, n: int) -> bool:
  """Whether `matvec` takes `rows` rows (per device) of a [n, k] weight: a power of two <= 8
  rows, k and n multiples of 16 (whole Triton tiles). The decoder also keeps to MAX_ROWS."""
  return (0 < rows <= _KERNEL_MAX_ROWS and rows & (rows - 1) == 0 and k % 16 == 0
          and n % 16 == 0)


def rows_per_device(rows: int, mesh: Mesh | None) -> tuple[int, str | tuple | None]:
  """(rows per device, the mesh axes splitting them) for `rows` decoder rows on `mesh`."""
  if mesh is None or mesh.size == 1:
    return rows, None
  axes = sharding.logical_to_spec(("batch",), (rows,), mesh)[0]
  names = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return rows // math.prod(mesh.shape[a] for a in names), axes


def _largest_block(size: int, cap: int) -> int:
  """The largest power of two <= cap dividing size."""
  block = 1
  while block * 2 <= cap and size % (block * 2) == 0:
    block *= 2
  return block


def default_blocks(n: int, k: int) -> tuple[int, int]:
  """(BLOCK_N, BLOCK_K): outputs per program so the grid has >= ~128 programs (a wave of a large
  GPU), at most 32; inputs per step up to 256 for long rows, 128 otherwise."""
  block_n = _largest_block(n, 32)
  while block_n > 4 and n // block_n < 128:
    block_n //= 2
  block_k = _largest_block(k, 256 if k >= 2048 else 128)
  return block_n, block_k


def _kernel(*refs, rows: int, block_k: int, norm: bool, eps: float, silu_mul: bool, add: bool):
  """One block of BLOCK_N outputs for all rows. refs: x [R, K]; with `add` the addend [R, K];
  w [BLOCK_N, K] (or [2, BLOCK_N, K] gate and up); norm scale [K] (float32); out [R, BLOCK_N];
  with `add` the sum [R, K] (written by program 0).

  The walk over K is unrolled (K / BLOCK_K independent loads, all in flight at once): a
  `fori_loop` waited a memory round trip per step (measured ~1.8 us per step on an H200).
  """
  refs = list(refs)
  if add:
    x_ref, add_ref, refs, sum_ref = refs[0], refs[1], refs[:1] + refs[2:-1], refs[-1]
  x_ref, w_ref = refs[:2]
  scale_ref = refs[2] if norm else None
  o_ref = refs[-1]
  k_total = x_ref.shape[1]
  chunks = [pl.ds(i * block_k, block_k) for i in range(k_total // block_k)]
  dtype = x_ref.dtype
  # xs[r][i]: row r's i-th chunk [1, BLOCK_K], in float32.
  xs = [[x_ref[pl.ds(r, 1), c].astype(jnp.float32) for c in chunks] for r in range(rows)]
  if add:  # the residual add of the step before, rounded to the compute dtype as there
    xs = [[(x + add_ref[pl.ds(r, 1), c].astype(jnp.float32)).astype(dtype).astype(jnp.float32)
           for x, c in zip(xs[r], chunks)] for r in range(rows)]

    @pl.when(pl.program_id(0) == 0)
    def _():
      for r in range(rows):
        for x, c in zip(xs[r], chunks):
          sum_ref[pl.ds(r, 1), c] = x.astype(sum_ref.dtype)
  if norm:
    # rsqrt(mean(x^2) + eps) per row, from the whole row (every program: the row is a few KB),
    # then as decoder.RMSNorm: normed and scaled in float32, rounded to the compute dtype.
    scales = [scale_ref[c][None, :] for c in chunks]
    for r in range(rows):
      inv = jax.lax.rsqrt(sum(jnp.sum(x * x) for x in xs[r]) / k_total + eps)
      xs[r] = [(x * inv * s).astype(dtype).astype(jnp.float32) for x, s in zip(xs[r], scales)]
  mats = 2 if silu_mul else 1
  accs = [[None] * mats for _ in range(rows)]
  for i, c in enumerate(chunks):
    ws = ([w_ref[m, :, c].astype(jnp.float32) for m in range(2)] if silu_mul
          else [w_ref[:, c].astype(jnp.float32)])
    for r in range(rows):
      for m in range(mats):
        prod = ws[m] * xs[r][i]
        accs[r][m] = prod if accs[r][m] is None else accs[r][m] + prod
  for r in range(rows):
    # Each matmul's result rounds to the compute dtype, as the decoder's einsums do.
    ys = [jnp.sum(acc, axis=1).astype(dtype).astype(jnp.float32) for acc in accs[r]]
    y = ys[0] * jax.nn.sigmoid(ys[0]) * ys[1] if silu_mul else ys[0]
    o_ref[pl.ds(r, 1), :] = y.astype(o_ref.dtype)[None, :]


def _local(x, w, norm_scale, add, *, eps: float, silu_mul: bool, interpret: bool,
           block_n: int | None, block_k: int | None, num_warps: int, num_stages: int):
  rows, k = x.shape
  n = w.shape[-2]
  auto_n, auto_k = default_blocks(n, k)
  block_n, block_k = block_n or auto_n, block_k or auto_k
  if n % block_n or k % block_k:
    raise ValueError(f"blocks ({block_n}, {block_k}) must divide the weight's [{n}, {k}]")
  kernel = functools.partial(_kernel, rows=rows, block_k=block_k, norm=norm_scale is not None,
                             eps=eps, silu_mul=silu_mul, add=add is not None)
  if silu_mul:
    w_spec = pl.BlockSpec((2, block_n, k), lambda j: (0, j, 0))
  else:
    w_spec = pl.BlockSpec((block_n, k), lambda j: (j, 0))
  rows_spec = pl.BlockSpec((rows, k), lambda j: (0, 0))
  in_specs = [rows_spec, w_spec]
  args = [x, w]
  if add is not None:
    in_specs.insert(1, rows_spec)
    args.insert(1, add)
  if norm_scale is not None:
    in_specs.append(pl.BlockSpec((k,), lambda j: (0,)))
    args.append(norm_scale.astype(jnp.float32))
  out_spec = pl.BlockSpec((rows, block_n), lambda j: (0, j))
  out_specs, out_shape = out_spec, jax.ShapeDtypeStruct((rows, n), x.dtype)
  if add is not None:
    out_specs, out_shape = [out_spec, rows_spec], [out_shape, jax.ShapeDtypeStruct(x.shape,
                                                                                 x.dtype)]
  return pl.pallas_call(
      kernel,
      grid=(n // block_n,),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
      name="rlthink_matvec" + "_add" * (add is not None) + "_norm" * (norm_scale is not None)
      + "_silu" * silu_mul,
  )(*args)


def matvec(x: jax.Array, w: jax.Array, *, norm_scale: jax.Array | None = None,
           eps: float = 1e-6, silu_mul: bool = False, add: jax.Array | None = None,
           mesh: Mesh | None = None, interpret: bool | None = None,
           block_n: int | None = None, block_k: int | None = None, num_warps: int = 4,
           num_stages: int = 1):
  """y = f(x) @ w.T for a few rows, in one kernel.

  Args:
    x: [R, K] rows (compute dtype); R per device must satisfy `supported`.
    add: [R, K]: the input is x + add (rounded to x's dtype: the decoder's residual add, done
      here instead of in a kernel of its own); the sum is returned too.
    w: [N, K] (input axis minor), or with `silu_mul` [2, N, K] (gate, up).
    norm_scale: [K]: x is first RMS-normed with this scale and `eps`, as `decoder.RMSNorm`.
    silu_mul: return silu(x @ gate.T) * (x @ up.T).
    mesh: shards the rows like the decoder's activations (`batch`); None for one device.
    interpret: run Pallas' interpreter; default: on any backend but GPU.
    block_n, block_k, num_warps, num_stages: the tiling (default `default_blocks`).

  Returns:
    [R, N] in x's dtype (products and sums in float32); with `add`, (that, x + add).
  """
  if x.ndim != 2 or w.ndim != (3 if silu_mul else 2) or w.shape[-1] != x.shape[1] or (
      silu_mul and w.shape[0] != 2):
    raise ValueError(f"matvec needs x [R, K] and w [{'2, ' if silu_mul else ''}N, K]; got x "
                     f"{x.shape}, w {w.shape}")
  n = w.shape[-2]
  if add is not None and add.shape != x.shape:
    raise ValueError(f"add must be x's shape {x.shape}, got {add.shape}")
  if norm_scale is not None and norm_scale.shape != (x.shape[1],):
    raise ValueError(f"norm_scale must be [{x.shape[1]}], got {norm_scale.shape}")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  run = functools.partial(_local, eps=eps, silu_mul=silu_mul, interpret=interpret,
                          block_n=block_n, block_k=block_k, num_warps=num_warps,
                          num_stages=num_stages)
  rows, row_axes = rows_per_device(x.shape[0], mesh)
  if not supported(rows, x.shape[1], n):
    raise ValueError(f"matvec takes a power of two <= {_KERNEL_MAX_ROWS} rows per device and sizes "
                     f"that are multiples of 16; got {rows} rows of a [{n}, {x.shape[1]}] weight")
  if mesh is None or mesh.size == 1:
    return run(x, w, norm_scale, add)
  rows_spec = PartitionSpec(row_axes, None)
  return jax.shard_map(run, mesh=mesh,
                       in_specs=(rows_spec, PartitionSpec(), PartitionSpec(), rows_spec),
                       out_specs=rows_spec if add is None else (rows_spec, rows_spec),
                       check_vma=False)(x, w, norm_scale, add)


def reference(x, w, norm_scale=None, eps=1e-6, silu_mul=False, add=None):
  """float64 numpy with the same contract (no rounding to the compute dtype), for tests."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  if add is not None:
    total = x + np.asarray(add, np.float64)
    return reference(total, w, norm_scale, eps, silu_mul), total
  if norm_scale is not None:
    x = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + eps) * np.asarray(norm_scale)
  if silu_mul:
    g, u = x @ w[0].T, x @ w[1].T
    y = g / (1 + np.exp(-g)) * u
  else:
    y = x @ w.T
  return y


def matvec_xla(x, w, *, norm_scale=None, eps: float = 1e-6, silu_mul: bool = False,
               add=None):
  """`matvec` as XLA ops (the decoder modules' computation, in the same rounding steps)."""
  if add is not None:
    total = x + add
    return matvec_xla(total, w, norm_scale=norm_scale, eps=eps, silu_mul=silu_mul), total
  dtype = x.dtype
  if norm_scale is not None:
    x32 = x.astype(jnp.float32)
    x = (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
         * norm_scale.astype(jnp.float32)).astype(dtype)
  if silu_mul:
    gate, up = jnp.einsum("rk,cnk->crn", x, w)
    return jax.nn.silu(gate) * up
  return jnp.einsum("rk,nk->rn", x, w)


def layer_matvec(role: str, x, w, *, mesh: Mesh | None = None, **kwargs) -> jax.Array:
  """The decoder layer's matmul `role` ("qkv", "o", "gate_up", "down"): as a kernel with the
  tiling of LAYER_KERNELS (each block the largest power of two up to it that divides the
  weight), or as XLA ops when the role is not listed there or its weight is smaller than
  KERNEL_MIN_SIZE's entry for it."""
  if role not in LAYER_KERNELS or w.size < KERNEL_MIN_SIZE.get(role, 0):
    return matvec_xla(x, w, **kwargs)
  block_n, block_k, warps = LAYER_KERNELS[role]
  return matvec(x, w, mesh=mesh, block_n=_largest_block(w.shape[-2], block_n),
                block_k=_largest_block(x.shape[1], block_k), num_warps=warps, **kwargs)
