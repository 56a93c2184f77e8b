"""Tiling of the decode matvec kernels (`rlthink.models.decode_matvec`) on the GPU.

Caution: in session 6 (calls 1-2) this program's times (12-29 us per call) did not match the
same kernels' times inside the decode loop (2-10 us, from profiles), nor their order; the
committed tilings come from in-place profiles (`matvec_variants.py` with --profile_dir).

For the four matmuls of a qwen2.5-0.5b / 1.5b layer (residual add + input norm + q/k/v,
o-projection, residual add + norm + gate/up + SiLU-multiply, down) at 1, 2 and 4 rows,
times one jitted program of CALLS independent kernel calls on distinct weights (more bytes than
the L2 holds, as in the decode loop) per tiling, and prints one JSON line per (shape, tiling):
microseconds per call and the bytes-per-second it reaches. Run on the device:
  PYTHONPATH=. python3 docs/benchmarks/tune_decode_matvec.py > tune.jsonl
"""

import itertools
import json
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rlthink.bench.common import time_fn
from rlthink.models import decode_matvec, presets

CALLS = int(__import__("os").environ.get("CALLS", 24))
TILINGS = [(4, 256), (8, 128), (8, 256), (16, 128), (32, 128)]
WARPS = (4, 8)


def shapes(model):
  c = presets.get_preset(model)
  e, m = c.hidden_size, c.intermediate_size
  qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
  return [("qkv", e, qkv, dict(norm=True, add=True)), ("o", c.num_heads * c.head_dim, e, {}),
          ("gate_up", e, m, dict(norm=True, silu=True, add=True)), ("down", m, e, {})]


def case(model, name, k, n, opts, rows, tilings, warps):
  rng = np.random.default_rng(0)
  dt = jnp.bfloat16
  w_shape = (2, n, k) if opts.get("silu") else (n, k)
  ws = [jnp.asarray(rng.normal(size=w_shape) * 0.02, dt) for _ in range(CALLS)]
  xs = [jnp.asarray(rng.normal(size=(rows, k)), dt) for _ in range(CALLS)]
  add = jnp.asarray(rng.normal(size=(rows, k)), dt) if opts.get("add") else None
  scale = jnp.ones((k,), jnp.float32) if opts.get("norm") else None
  weight_bytes = ws[0].nbytes
  for (bn, bk), nw in itertools.product(tilings, warps):
    if n % bn or k % bk:
      continue

    def run(xs, ws, bn=bn, bk=bk, nw=nw):
      return [decode_matvec.matvec(x, w, norm_scale=scale, add=add,
                                   silu_mul=bool(opts.get("silu")), block_n=bn, block_k=bk,
                                   num_warps=nw) for x, w in zip(xs, ws)]
    try:
      s = statistics.median(time_fn(jax.jit(run), xs, ws, warmup=1, iters=20)) / CALLS
      rec = dict(us=round(s * 1e6, 2), gbps=round(weight_bytes / s / 1e9))
    except Exception as e:  # a tiling Triton rejects: say so, go on
      rec = dict(error=str(e).splitlines()[0][:200])
    print(json.dumps(dict(model=model, matmul=name, rows=rows, k=k, n=n, block_n=bn, block_k=bk,
                          num_warps=nw, default=(bn, bk) == decode_matvec.default_blocks(n, k)
                          and nw == 4, **rec)), flush=True)


def main():
  for model in sys.argv[1:] or ["qwen2.5-0.5b", "qwen2.5-1.5b"]:
    for name, k, n, opts in shapes(model):
      case(model, name, k, n, opts, 1, TILINGS, WARPS)
      for rows in (2, 4):  # the default tiling only
        case(model, name, k, n, opts, rows, [decode_matvec.default_blocks(n, k)], (4,))


if __name__ == "__main__":
  main()
