"""Pieces every benchmark shares: JSON-line records, timing, PyTorch baselines in a subprocess.

A benchmark prints one JSON object per measured case (`emit`) and can append it to a JSONL file.
Timings are wall-clock seconds per call after warm-up (compilation excluded), each call ended with
`jax.block_until_ready`, summarized by the median (`time_fn`, `summarize`).

PyTorch baselines run in a child Python process (`run_torch_subprocess`): JAX reserves 75% of GPU
memory when its backend starts, so the two frameworks must not share a process. The child is any
module whose `main()` reads its arguments with `child_args()` and reports with `child_result()`;
the child's environment pins JAX (if imported at all) to the CPU so it never touches the GPU.

Importing jax does not start its backend, so a benchmark can still start the PyTorch child before
its own first device call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jaxlib

from rlthink.bench import hardware

RESULT_PREFIX = "RLTHINK_BENCH_RESULT "


def emit(record: dict, out: str | None = None) -> None:
  """Prints `record` as one JSON line on stdout and, when `out` is a path, appends it there."""
  line = json.dumps(record, sort_keys=False, default=_json_default)
  print(line, flush=True)
  if out:
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
      f.write(line + "\n")


def _json_default(x: Any):
  try:  # numpy / jax scalars
    return x.item()
  except AttributeError:
    return str(x)


def time_fn(fn: Callable[..., Any], *args, warmup: int = 2, iters: int = 10) -> list[float]:
  """Seconds of each of `iters` timed calls of `fn(*args)`, after `warmup` untimed calls.

  Every call is followed by `jax.block_until_ready` on its result, so each time covers the device
  work, not just the dispatch. A function that donates its inputs must not be called twice on the
  same arrays: pass a closure that threads its state instead, e.g.

      box = [state]
      def step():
        box[0], metrics = train_step(box[0], batch)
        return metrics
      times = time_fn(step, warmup=2, iters=10)
  """
  if iters < 1 or warmup < 0:
    raise ValueError(f"time_fn needs iters >= 1 and warmup >= 0, got {iters=}, {warmup=}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return times


def summarize(times: Sequence[float]) -> dict:
  """Median / min / max and the relative spread (max-min)/median of a list of seconds."""
  med = statistics.median(times)
  return {"median_s": med, "min_s": min(times), "max_s": max(times),
          "spread": (max(times) - min(times)) / med if med > 0 else 0.0, "n": len(times)}


def device_info(device=None) -> dict:
  """What the numbers were measured on: device kind, platform and count (of `device`'s platform;
  default the first JAX device), versions, datasheet peak FLOP/s (None when unknown)."""
  dev = device if device is not None else jax.devices()[0]
  devices = jax.devices(dev.platform)
  info = {"device": dev.device_kind, "platform": dev.platform, "num_devices": len(devices),
          "num_processes": jax.process_count(), "jax_version": jax.__version__,
          "python_version": platform.python_version(),
          "peak_flops": hardware.device_peak_flops(dev)}
  info["jaxlib_version"] = getattr(jaxlib, "__version__", None)
  return info


def peak_memory_bytes(device=None) -> int | None:
  """The device allocator's high-water mark in bytes (process-wide), or None where unreported."""
  device = device or jax.devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # some backends (CPU) do not implement it
    return None
  return None if not stats else stats.get("peak_bytes_in_use")


# ------------------------------------------------------------------------------------------------
# PyTorch baselines in a child process.


def run_torch_subprocess(module: str, args: dict, timeout: float | None = 3600,
                         env: dict | None = None) -> dict:
  """Runs `python -m module --args_json '<json of args>'` and returns the dict it reported.

  The child must call `child_result(record)` once (see the module docstring). JAX_PLATFORMS=cpu is
  set in the child so that importing rlthink (and with it jax) there never claims the GPU.

  Raises:
    RuntimeError naming the module, its exit status and the tail of its stderr when it fails or
    reports nothing.
  """
  child_env = dict(os.environ)
  child_env["JAX_PLATFORMS"] = "cpu"
  child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
  child_env.update(env or {})
  cmd = [sys.executable, "-m", module, "--args_json", json.dumps(args)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env)
  except subprocess.TimeoutExpired as e:
    raise RuntimeError(f"{module} did not finish within {timeout} s") from e
  results = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines()
             if line.startswith(RESULT_PREFIX)]
  if proc.returncode != 0 or not results:
    tail = (proc.stderr or proc.stdout)[-3000:]
    raise RuntimeError(f"{module} exited with status {proc.returncode} and "
                       f"{'no' if not results else 'a'} result; its output ends with:\n{tail}")
  return json.loads(results[-1])


def child_args(argv: Sequence[str] | None = None) -> dict:
  """In a child started by `run_torch_subprocess`: the args dict it was given."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--args_json", required=True, help="JSON object of the benchmark's arguments")
  parsed = parser.parse_args(argv)
  args = json.loads(parsed.args_json)
  if not isinstance(args, dict):
    raise ValueError(f"--args_json must be a JSON object, got {type(args).__name__}")
  return args


def child_result(record: dict) -> None:
  """In a child started by `run_torch_subprocess`: reports `record` to the parent (call once)."""
  print(RESULT_PREFIX + json.dumps(record, default=_json_default), flush=True)
