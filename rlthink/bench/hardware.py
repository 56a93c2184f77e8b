"""The two ceilings of a device: matmul rate and memory bandwidth, measured and from the datasheet.

MFU is reported twice by the benchmarks: against the datasheet's dense bf16 peak (`PEAK_FLOPS`,
the number papers quote) and against the rate a large plain matmul reaches here
(`measure_matmul_flops`), which is what a model's matmuls can at best approach on this card.
Both measurements run in-process, on random data (never zeros), in a few seconds on a GPU.
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp

from rlthink.bench import common

# Dense (no sparsity) bf16 FLOP/s per JAX device, matched by substring of the lower-cased
# `device_kind`, first match wins (so the more specific names come first). TPU v2/v3 expose each
# of a chip's two cores as a device, hence half the chip's rate.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("gh200", 989e12),
    ("h200", 989e12),
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),
    ("h800", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v4", 275e12),
    ("tpu v3", 61.5e12),
    ("tpu v2", 22.5e12),
)


def device_peak_flops(device=None) -> float | None:
  """Datasheet dense bf16 FLOP/s of `device` (default: the first JAX device), None if unknown."""
  if device is None:
    device = jax.devices()[0]
  kind = str(getattr(device, "device_kind", device)).lower()
  for key, flops in PEAK_FLOPS:
    if key in kind:
      return flops
  return None


def _device(device):
  return device if device is not None else jax.devices()[0]


def measure_matmul_flops(dtype: str = "bfloat16", n: int | None = None, chain: int | None = None,
                         iters: int = 10, device=None) -> float:
  """FLOP/s of a chain of `chain` [n, n] @ [n, n] products in one jitted call (median of `iters`).

  Defaults: n=8192, chain=16 on an accelerator (about 18 TFLOP per call); n=256, chain=4 on CPU.
  The operands are N(0, 1/n), so the chained products stay O(1) in any dtype. Runs on `device`
  (default: the first JAX device).
  """
  device = _device(device)
  accel = device.platform != "cpu"
  n = n or (8192 if accel else 256)
  chain = chain or (16 if accel else 4)
  kx, kw = jax.random.split(jax.random.key(0))
  x = (jax.random.normal(kx, (n, n), jnp.float32) / n ** 0.5).astype(dtype)
  w = (jax.random.normal(kw, (n, n), jnp.float32) / n ** 0.5).astype(dtype)
  x, w = jax.device_put((x, w), device)

  @jax.jit
  def run(x, w):
    return jax.lax.fori_loop(0, chain, lambda _, y: y @ w, x)

  times = common.time_fn(run, x, w, warmup=2, iters=iters)
  return 2.0 * n ** 3 * chain / statistics.median(times)


def measure_hbm_bandwidth(num_bytes: int | None = None, passes: int | None = None,
                          iters: int = 10, device=None) -> float:
  """Device-memory bytes/s of an elementwise pass over a float32 array (read + write counted).

  Defaults: a 1 GiB array and 10 dependent passes per jitted call on an accelerator (each pass is
  its own kernel, so nothing stays in cache); 16 MiB and 4 passes on CPU. Runs on `device`
  (default: the first JAX device).
  """
  device = _device(device)
  accel = device.platform != "cpu"
  num_bytes = num_bytes or (1 << 30 if accel else 1 << 24)
  passes = passes or (10 if accel else 4)
  size = num_bytes // 4
  x = jax.device_put(jax.random.uniform(jax.random.key(1), (size,), jnp.float32), device)

  @jax.jit
  def run(x):
    return jax.lax.fori_loop(0, passes, lambda i, y: y * 0.999 + 0.001, x)

  times = common.time_fn(run, x, warmup=2, iters=iters)
  return 2.0 * size * 4 * passes / statistics.median(times)
