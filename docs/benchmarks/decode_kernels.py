"""Micro-benchmark of the kernels of one decode step (qwen2.5-0.5b shapes), to choose the sampler's
weight layout and attention kernel. Not part of the package: run on the GPU as

    python3 docs/benchmarks/decode_kernels.py --out kernels.jsonl

Each case runs its kernel for 24 stacked "layers" (distinct weights / caches, so nothing is served
from L2) inside one jitted `fori_loop` and prints one JSON line: microseconds per layer, and the
bytes floor per layer at the HBM bandwidth measured in the same run.

- matmul: x [B, E] times a weight stored [E, N] ("in_out", the decoder's layout) or [N, E]
  ("out_in", the row-reduction layout), bf16, float32 accumulate.
- attention: one query per head over a [B, K, S, D] cache with the first `fill` slots valid:
  the decoder's XLA path over all S slots, the same over a static slice of the filled slots, and
  the Pallas (Triton) decode kernel `jax.experimental.pallas.ops.gpu.decode_attention.gqa`.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp

from rlthink.bench import common, hardware
from rlthink.models import decoder

LAYERS = 24


def timed(fn, *args, iters=20):
  return statistics.median(common.time_fn(jax.jit(fn), *args, warmup=2, iters=iters)) / LAYERS


def matmul_cases(bandwidth):
  for b in (1, 64, 256):
    for e, n in ((896, 9728), (896, 4864), (896, 1152), (896, 896), (4864, 896), (896, 151936)):
      layers = LAYERS if n < 100_000 else 2
      key = jax.random.key(0)
      x = jax.random.normal(key, (b, e), jnp.bfloat16)
      for layout in ("in_out", "out_in"):
        shape = (layers, e, n) if layout == "in_out" else (layers, n, e)
        w = jax.random.normal(key, shape, jnp.bfloat16)
        spec = "be,en->bn" if layout == "in_out" else "be,ne->bn"

        def run(x, w, spec=spec, layers=layers):
          def body(i, acc):
            return acc + jnp.einsum(spec, x, w[i], preferred_element_type=jnp.float32)
          return jax.lax.fori_loop(0, layers, body, jnp.zeros((x.shape[0], n), jnp.float32))

        sec = timed(run, x, w) * LAYERS / layers
        floor = 2 * e * n / bandwidth
        yield {"case": "matmul", "batch": b, "in": e, "out": n, "layout": layout,
               "us": sec * 1e6, "floor_us": floor * 1e6, "of_floor": floor / sec}


def attention_cases(bandwidth):
  from jax.experimental.pallas.ops.gpu import decode_attention

  h, kv, d, s, fill = 14, 2, 64, 384, 256
  for b in (1, 64, 256):
    key = jax.random.key(1)
    q = jax.random.normal(key, (b, 1, h, d), jnp.bfloat16)
    k = jax.random.normal(key, (LAYERS, b, kv, s, d), jnp.bfloat16)
    v = jax.random.normal(jax.random.key(2), (LAYERS, b, kv, s, d), jnp.bfloat16)
    mask = jnp.broadcast_to(jnp.arange(s) < fill, (b, 1, s))
    floor = 2 * b * kv * fill * d * 2 / bandwidth

    def xla(q, k, v, mask, width=s):
      def body(i, acc):
        return acc + decoder.dot_product_attention(q, k[i, :, :, :width], v[i, :, :, :width],
                                                   mask[:, :, :width], "bksd")
      return jax.lax.fori_loop(0, LAYERS, body, jnp.zeros_like(q))

    def pallas(q, k, v, splits):
      lengths = jnp.full((b,), fill, jnp.int32)

      def body(i, acc):
        out = decode_attention.gqa(q[:, 0], jnp.swapaxes(k[i], 1, 2), jnp.swapaxes(v[i], 1, 2),
                                   jnp.zeros((b,), jnp.int32), lengths, block_k=s // splits,
                                   k_splits=splits)
        return acc + out[:, None]
      return jax.lax.fori_loop(0, LAYERS, body, jnp.zeros_like(q))

    ref = jax.jit(xla)(q, k, v, mask)
    variants = [("xla_all_slots", functools.partial(xla, width=s)),
                ("xla_filled_slice", functools.partial(xla, width=fill))]
    variants += [(f"pallas_splits{n}", lambda q, k, v, m, n=n: pallas(q, k, v, n))
                 for n in (3, 6, 12)]
    for name, fn in variants:
      try:
        out = jax.jit(fn)(q, k, v, mask)
        err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref.astype(jnp.float32))))
        sec = timed(fn, q, k, v, mask)
        yield {"case": "attention", "impl": name, "batch": b, "slots": s, "fill": fill,
               "us": sec * 1e6, "floor_us": floor * 1e6, "of_floor": floor / sec,
               "max_abs_diff_vs_xla": err}
      except Exception as e:  # record a kernel that does not compile here, keep going
        yield {"case": "attention", "impl": name, "batch": b, "error": repr(e)[:300]}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out")
  args = p.parse_args()
  bandwidth = hardware.measure_hbm_bandwidth()
  info = {"hbm_bytes_per_s": bandwidth, "device": str(jax.devices()[0])}
  for gen in (matmul_cases, attention_cases):
    for record in gen(bandwidth):
      common.emit({**record, **info}, args.out)


if __name__ == "__main__":
  main()
