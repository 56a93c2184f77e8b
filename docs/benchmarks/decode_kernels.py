"""Micro-benchmark of the kernels of one decode step (qwen2.5-0.5b shapes), to tune the sampler's
decode-attention kernel and choose its weight layouts. Not part of the package: on the GPU,

    PYTHONPATH=. python3 docs/benchmarks/decode_kernels.py --out kernels.jsonl

Each case runs its kernel on 24 distinct "layers" (separate weight / cache buffers, so nothing is
served from L2), unrolled in one jitted function as the decode loop runs them, and prints one
JSON line: microseconds per layer, and the bytes floor per layer at the HBM bandwidth measured
in the same run. (The session-3 first version ran the layers in a fori_loop: its loop overhead
hid every kernel; not used.)

- attention: one query per head over a [B, K, S, D] cache with the first `fill` slots valid:
  the decoder's XLA einsum path over all S slots, and rlthink's Pallas kernel
  (`rlthink.models.decode_attention`) with several tilings.
- matmul: x [B, E] times a weight stored [E, N] ("in_out", the decoder's layout) or [N, E]
  ("out_in"), bf16 with float32 accumulation.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp

from rlthink.bench import common, hardware
from rlthink.models import decode_attention as da
from rlthink.models import decoder

LAYERS = 24


def per_layer_us(fn, *args):
  return 1e6 * statistics.median(common.time_fn(jax.jit(fn), *args, warmup=2, iters=20)) / LAYERS


def attention_cases(bandwidth):
  h, kv, d, s, fill = 14, 2, 64, 384, 256
  for b in (256, 1):
    keys = jax.random.split(jax.random.key(b), 2 * LAYERS + 1)
    q = jax.random.normal(keys[0], (b, h, d), jnp.bfloat16)
    ks = [jax.random.normal(keys[1 + i], (b, kv, s, d), jnp.bfloat16) for i in range(LAYERS)]
    vs = [jax.random.normal(keys[1 + LAYERS + i], (b, kv, s, d), jnp.bfloat16)
          for i in range(LAYERS)]
    mask = jnp.broadcast_to(jnp.arange(s) < fill, (b, 1, s))
    start, length = jnp.zeros((b,), jnp.int32), jnp.full((b,), fill, jnp.int32)
    floor = 2 * b * kv * fill * d * 2 / bandwidth

    def xla(q, ks, vs):
      return sum(decoder.dot_product_attention(q[:, None], k, v, mask, "bksd")[:, 0].astype(
          jnp.float32) for k, v in zip(ks, vs))

    def pallas(q, ks, vs, **tiling):
      return sum(da.decode_attention(q, k, v, start, length, **tiling).astype(jnp.float32)
                 for k, v in zip(ks, vs))

    ref = jax.jit(xla)(q, ks, vs)
    variants = [("xla", xla, {})]
    for chunk in (32, 64, 128, s):  # s: one whole-row program per (row, KV head), no merge
      for block in (32, 64, 128):
        for warps in (4, 8):
          if block <= chunk and chunk % block == 0:
            tiling = dict(chunk=chunk, block=block, num_warps=warps)
            variants.append(("pallas", functools.partial(pallas, **tiling), tiling))
    variants.append(("pallas_default", pallas, {}))
    for name, fn, tiling in variants:
      try:
        err = float(jnp.max(jnp.abs(jax.jit(fn)(q, ks, vs) - ref)))
        us = per_layer_us(fn, q, ks, vs)
        yield {"case": "attention", "impl": name, **tiling, "batch": b, "slots": s, "fill": fill,
               "us": us, "floor_us": floor * 1e6, "of_floor": floor * 1e6 / us,
               "max_abs_diff_vs_xla": err}
      except Exception as e:  # record a tiling that does not compile here, keep going
        yield {"case": "attention", "impl": name, **tiling, "batch": b, "error": repr(e)[:300]}


def matmul_cases(bandwidth):
  for b in (1, 256):
    for e, n in ((896, 9728), (896, 1152), (896, 896), (4864, 896)):
      keys = jax.random.split(jax.random.key(n), LAYERS + 1)
      x = jax.random.normal(keys[0], (b, e), jnp.bfloat16)
      for layout, spec, shape in (("in_out", "be,en->bn", (e, n)), ("out_in", "be,ne->bn", (n, e))):
        ws = [jax.random.normal(k, shape, jnp.bfloat16) for k in keys[1:]]

        def run(x, ws, spec=spec):
          return sum(jnp.einsum(spec, x, w, preferred_element_type=jnp.float32) for w in ws)

        us = per_layer_us(run, x, ws)
        floor = 2 * e * n / bandwidth * 1e6
        yield {"case": "matmul", "batch": b, "in": e, "out": n, "layout": layout, "us": us,
               "floor_us": floor, "of_floor": floor / us}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out")
  p.add_argument("--cases", nargs="+", choices=("attention", "matmul"),
                 default=["attention", "matmul"])
  args = p.parse_args()
  bandwidth = hardware.measure_hbm_bandwidth()
  info = {"hbm_bytes_per_s": bandwidth, "device": str(jax.devices()[0])}
  cases = {"attention": attention_cases, "matmul": matmul_cases}
  for gen in (cases[c] for c in args.cases):
    for record in gen(bandwidth):
      common.emit({**record, **info}, args.out)


if __name__ == "__main__":
  main()
