"""GPU kernel time of a profiler trace, by kind, by model op, by HLO op and by kernel.

`profile_summary` reads a `jax.profiler.trace` directory (the `.xplane.pb` it wrote) and the
compiled module's HLO text, and returns a plain-text table; `rlthink bench train|sample
--profile_dir` write one per case next to the trace.
"""

from __future__ import annotations

import collections
import glob
import os
import re

import jax


def _kernel_kind(kernel: str, op: str) -> str:
  k = kernel.lower()
  if any(s in k for s in ("cudnn", "flash", "fmha", "sdpa")):
    return "attention"
  if any(s in k for s in ("gemm", "cutlass", "xmma", "cublas", "sm90_", "nvjet")):
    return "matmul"
  if "triton" in k:
    return "triton"
  if any(s in k for s in ("memcpy", "memset", "copy")):
    return "copy"
  return "reduce" if "reduce" in (k + op.lower()) else "fusion"


def _op_paths(hlo_text: str) -> dict:
  """HLO instruction name -> its JAX op_name, shortened to 'fwd|bwd|step: path' (e.g.
  'bwd: layers/mlp/dot_general'), from the compiled module's text."""
  paths = {}
  for m in re.finditer(r'%([\w.\-]+) = [^\n]*?op_name="([^"]*)"', hlo_text):
    name, op = m.groups()
    phase = "bwd" if "transpose(" in op else "fwd" if "jvp(" in op else "step"
    parts = [p for p in op.split("/") if p and not p.startswith(("jit(", "jvp(", "transpose("))
             and p not in ("while", "body", "eval_jaxpr", "cond", "checkpoint", "remat")]
    paths[name] = f"{phase}: {'/'.join(parts[-3:])}"
  return paths


def profile_summary(trace_dir: str, steps: int, top: int = 60, hlo_text: str | None = None,
                    sequence: int = 0) -> str:
  """GPU kernel time of a trace (`jax.profiler.trace` directory) per step: by kind (matmul,
  attention, reductions, other fusions, copies), by model op (from `hlo_text`, the compiled
  module: forward / backward / rest of the step and the op's path), by HLO op and by kernel name,
  largest first; with `sequence`, that many kernels in order from the middle of the trace.
  Kernels inside command buffers are named by the buffer only: run with
  XLA_FLAGS=--xla_gpu_enable_command_buffer= to attribute every kernel."""
  op_paths = _op_paths(hlo_text) if hlo_text else {}
  by_path = collections.Counter()

  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  if not paths:
    return f"no .xplane.pb under {trace_dir}\n"
  data = jax.profiler.ProfileData.from_file(paths[-1])
  by_op, by_kernel, by_kind = (collections.Counter() for _ in range(3))
  counts = collections.Counter()
  planes = [p for p in data.planes if p.name.startswith("/device:GPU")]
  lines = [l for p in planes for l in p.lines if l.name.startswith("Stream")]
  if not lines:  # other profiler versions name the kernel lines differently
    lines = [l for p in planes for l in p.lines if "XLA" not in l.name]
  names = sorted({l.name for p in planes for l in p.lines})
  timeline = []
  for line in lines:
    for ev in line.events:
      stats = dict(ev.stats)
      timeline.append((ev.start_ns, ev.duration_ns, ev.name, str(stats.get("hlo_op", "?"))))
      op = str(stats.get("hlo_op", "?"))
      us = ev.duration_ns / 1e3 / steps
      by_op[op] += us
      counts[op] += 1
      by_kernel[ev.name[:120]] += us
      by_kind[_kernel_kind(ev.name, op)] += us
      fusion = re.sub(r"_(\d+)$", r".\1", ev.name)  # kernel fusion_3 is HLO fusion.3
      by_path[op_paths.get(op, op_paths.get(fusion, op))] += us
  total = sum(by_kind.values())
  out = [f"GPU kernel time per step: {total / 1e3:.2f} ms ({paths[-1]}; lines {names})",
         "by kind:"]
  out += [f"  {k:<10}{v / 1e3:9.2f} ms {100 * v / max(total, 1e-9):5.1f}%"
          for k, v in by_kind.most_common()]
  if op_paths:
    out.append("by model op (ms/step):")
    out += [f"  {v / 1e3:8.3f}  {k}" for k, v in by_path.most_common(2 * top)]
  out.append("by HLO op (ms/step, launches/step):")
  out += [f"  {v / 1e3:8.3f} {counts[k] / steps:6.0f}  {k}" for k, v in by_op.most_common(top)]
  out.append("by kernel (ms/step):")
  out += [f"  {v / 1e3:8.3f}  {k}" for k, v in by_kernel.most_common(top)]
  if sequence:  # what one stretch of the step runs, in order (a layer's chain of kernels)
    timeline.sort()
    middle = timeline[len(timeline) // 2:len(timeline) // 2 + sequence]
    out.append(f"{len(middle)} kernels in order from the middle of the trace (us, gap us before "
               "it, kernel, HLO op):")
    end = middle[0][0] if middle else 0
    for start, dur, name, op in middle:
      out.append(f"  {dur / 1e3:7.2f} {(start - end) / 1e3:6.2f}  {name[:70]}  {op}")
      end = start + dur
  return "\n".join(out) + "\n"
