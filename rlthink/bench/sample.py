"""`rlthink bench sample`: rollout tokens/s against transformers `generate` and the hardware floor.

Each case samples `new_tokens` tokens (forced: no stop tokens) after random `prompt_len`-token
prompts, at temperature 1, for `batch` prompts, with `rlthink.sample` on a randomly initialized
preset (compute dtype --dtype; float32 master parameters unless --param_dtype says otherwise: the
sampler casts them to the compute dtype once per call). Tokens/s counts new tokens per second of
whole calls (prefill, decode and the host round trip), the median of --iters calls after
compilation and --warmup calls.

The floor is the fastest any implementation could go on this device, from two ceilings measured
in the same run (`rlthink.bench.hardware`): the bytes that must move (every matmul weight once per
decode step, plus each step's attended keys and values: prompt and tokens so far) over the
measured memory bandwidth, and the FLOPs (2 per matmul weight per token, plus attention) over the
measured matmul rate; the larger time wins. The PyTorch baseline (`rlthink.bench.sample_torch`:
transformers generate with a static cache) runs first, in a child process, before this process
starts its JAX backend. One JSON line per case on stdout (and appended to --out):

    {"bench": "sample", "model", "batch", "prompt_len", "new_tokens", "rlthink_tok_s",
     "torch_tok_s", "ratio", "floor_tok_s", "pct_floor", "device", "jax_version", ...}

    python -m rlthink.bench.sample --model qwen2.5-0.5b --batch 1 64 256 --out bench.jsonl
    python -m rlthink.bench.sample --quick          # tiny model on CPU, well under a minute
    python -m rlthink.bench.sample --layers unrolled scan --hlo_dir hlo/   # compare, keep HLO
    python -m rlthink.bench.sample --attention xla pallas   # decode attention, side by side
    python -m rlthink.bench.sample --batch 1 --decode_setting matvec.gate_up=xla  # a kernel off
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import statistics
import sys
import time

import jax
import numpy as np

import rlthink
from rlthink import sharding
from rlthink.bench import common, decode_settings, hardware, profile, sample_breakdown
from rlthink.models.presets import get_preset
from rlthink.sampling import sampler

DEFAULT_MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
DEFAULT_BATCHES = (1, 64, 256)


def parse_args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench sample", description=__doc__.split("\n")[0])
  p.add_argument("--model", action="extend", nargs="+", help="preset names; default "
                 f"{' '.join(DEFAULT_MODELS)} ('tiny' with --quick)")
  p.add_argument("--batch", action="extend", nargs="+", type=int,
                 help=f"prompts per call; default {' '.join(map(str, DEFAULT_BATCHES))}")
  p.add_argument("--prompt_len", type=int, help="prompt tokens (default 128; 16 with --quick)")
  p.add_argument("--new_tokens", type=int, help="new tokens, forced (default 256; 16 --quick)")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype of both sides")
  p.add_argument("--param_dtype", default="float32", help="stored parameter dtype (rlthink)")
  p.add_argument("--temperature", type=float, default=1.0, help="rlthink's sampling temperature")
  p.add_argument("--layers", action="extend", nargs="+", choices=("unrolled", "scan"),
                 help="rlthink's decode layers (sample(unroll_layers=...)); several values time "
                 "each (default: unrolled)")
  p.add_argument("--attention", action="extend", nargs="+", choices=("auto", "xla", "pallas"),
                 help="decode attention (sample(decode_attention=...)); several values time each "
                 "(default: auto, the Pallas kernel on GPU)")
  p.add_argument("--iters", type=int, help="timed calls per case (default 5; 2 with --quick)")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls after compilation")
  p.add_argument("--mesh", help="mesh sizes data,fsdp,tensor (used with more than one device)")
  p.add_argument("--no_torch", action="store_true", help="skip the PyTorch baseline")
  p.add_argument("--quick", action="store_true", help="tiny model, tiny shapes, CPU: a smoke test")
  p.add_argument("--hlo_dir", help="write each case's optimized HLO (<model>_b<batch>.hlo.txt)")
  p.add_argument("--profile_dir", help="trace one call per case with the JAX profiler; write the "
                 "kernel-time summary (<model>_b<batch>_<layers>.ops.txt) and the trace there")
  p.add_argument("--decode_setting", action="append", default=[], metavar="NAME=VALUE",
                 help="set a decode kernel knob for this run (repeatable), e.g. matvec.down=xla "
                 "or attention_tiling.512=64,4,2; see rlthink.bench.decode_settings")
  p.add_argument("--breakdown", action="store_true",
                 help="also time the parts of a decode step (rlthink.bench.sample_breakdown)")
  p.add_argument("--out", help="append the JSON lines to this file")
  args = p.parse_args(argv)
  quick = args.quick
  args.model = args.model or (["tiny"] if quick else list(DEFAULT_MODELS))
  args.batch = args.batch or ([1, 4] if quick else list(DEFAULT_BATCHES))
  args.prompt_len = args.prompt_len or (16 if quick else 128)
  args.new_tokens = args.new_tokens or (16 if quick else 256)
  args.iters = args.iters or (2 if quick else 5)
  args.layers = list(dict.fromkeys(args.layers or ["unrolled"]))
  args.attention = list(dict.fromkeys(args.attention or ["auto"]))
  for name in ("prompt_len", "new_tokens", "iters"):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be positive")
  if any(b <= 0 for b in args.batch):
    p.error("--batch sizes must be positive")
  return args


def floor(config, batch: int, prompt_len: int, new_tokens: int, hbm_bytes_per_s: float,
          matmul_flops_per_s: float) -> dict:
  """The hardware floor of one call: bytes and FLOPs that any implementation must spend.

  Bytes: each decode step reads every matmul weight once (in the compute dtype) and the keys and
  values of all tokens so far; the prefill reads the weights once more. FLOPs: 2 per matmul
  weight per token (prompt and new), plus 4 * layers * heads * head_dim per attended token pair.
  """
  itemsize = np.dtype(config.dtype).itemsize
  l, h, kv, d = config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim
  layer_matmul = config.layer_params - 2 * config.hidden_size  # minus the two norm scales
  head = config.vocab_size * config.hidden_size               # the logits projection
  weight_bytes = (l * layer_matmul + head) * itemsize
  kv_bytes_per_token = 2 * l * kv * d * itemsize
  # Attended context of decode step t (0-based) is prompt_len + t tokens.
  context = new_tokens * prompt_len + new_tokens * (new_tokens - 1) // 2
  total_bytes = (new_tokens + 1) * weight_bytes + batch * context * kv_bytes_per_token
  matmul_flops = 2 * batch * (prompt_len * l * layer_matmul
                              + new_tokens * (l * layer_matmul + head))
  attention_flops = 4 * l * h * d * batch * (prompt_len * (prompt_len + 1) // 2 + context)
  total_flops = matmul_flops + attention_flops
  memory_s = total_bytes / hbm_bytes_per_s
  compute_s = total_flops / matmul_flops_per_s
  floor_s = max(memory_s, compute_s)
  return {"floor_tok_s": batch * new_tokens / floor_s,
          "floor_bound": "memory" if memory_s >= compute_s else "compute",
          "floor_bytes": total_bytes, "floor_flops": total_flops}


def bench_rlthink(policy, batch: int, args, name: str, layers: str, attention: str) -> dict:
  """Compiles and times `rlthink.sample` for one case; returns the rlthink half of the record."""
  rng = np.random.RandomState(batch)
  prompts = rng.randint(0, policy.config.vocab_size, (batch, args.prompt_len)).tolist()
  options = dict(max_new_tokens=args.new_tokens, temperature=args.temperature, stop_tokens=(),
                 seed=0, unroll_layers=layers == "unrolled", decode_attention=attention)
  start = time.perf_counter()
  ro = sampler.sample(policy, prompts, **options)
  first_s = time.perf_counter() - start
  if not (ro.completion_mask.all() and int(ro.decode_steps) == args.new_tokens):
    raise RuntimeError(f"{name} batch {batch}: the rollouts did not run all {args.new_tokens} "
                       "steps; the benchmark must force every token")
  if args.hlo_dir:
    os.makedirs(args.hlo_dir, exist_ok=True)
    text = sampler.lower_sample(policy, prompts, **options).compile().as_text()
    with open(os.path.join(args.hlo_dir, f"{name}_b{batch}_{layers}_{attention}.hlo.txt"),
              "w") as f:
      f.write(text)
  times = common.time_fn(lambda: sampler.sample(policy, prompts, **options),
                         warmup=args.warmup, iters=args.iters)
  med = statistics.median(times)
  out = {"rlthink_tok_s": batch * args.new_tokens / med, "rlthink_median_s": med,
         "rlthink_spread": (max(times) - min(times)) / med,
         "rlthink_ms_per_step": 1e3 * med / args.new_tokens,
         "rlthink_first_call_s": first_s, "mean_logprob": float(ro.logprobs.mean())}
  if args.profile_dir:
    out.update(_profile(policy, prompts, options, args, f"{name}_b{batch}_{layers}_{attention}"))
  peak = common.peak_memory_bytes(jax.devices()[0])
  out["device_peak_memory_gb"] = None if peak is None else peak / 1e9
  return out


def _profile(policy, prompts, options, args, case: str) -> dict:
  """Traces one call; writes <case>.ops.txt (GPU kernel time per decode step by kind, op and
  kernel) and returns the kernel time per step, to set against the wall time per step (the gap
  is the device idling: launches, host round trips)."""
  os.makedirs(args.profile_dir, exist_ok=True)
  hlo = sampler.lower_sample(policy, prompts, **options).compile().as_text()
  trace_dir = os.path.join(args.profile_dir, case)
  with jax.profiler.trace(trace_dir):
    start = time.perf_counter()
    sampler.sample(policy, prompts, **options)
    wall = time.perf_counter() - start
  try:
    summary = profile.profile_summary(trace_dir, steps=args.new_tokens, hlo_text=hlo, sequence=80)
  except Exception as e:  # the trace itself is written; the summary is a convenience
    summary = f"no summary of {trace_dir}: {type(e).__name__}: {e}\n"
  with open(os.path.join(args.profile_dir, case + ".ops.txt"), "w") as f:
    f.write(f"wall time per step while tracing: {1e3 * wall / args.new_tokens:.3f} ms\n" + summary)
  found = re.search(r"GPU kernel time per step: ([\d.]+) ms", summary)
  return {"profile_kernel_ms_per_step": float(found.group(1)) if found else None,
          "profile_wall_ms_per_step": 1e3 * wall / args.new_tokens}


def run_torch(config, args) -> dict:
  """{batch: the PyTorch half of its record} (or a torch_skipped / torch_error entry per batch)."""
  def each(entry):
    return {b: dict(entry) for b in args.batch}

  if args.no_torch:
    return each({"torch_skipped": "--no_torch"})
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    return each({"torch_skipped": "torch or transformers is not installed"})
  try:
    result = common.run_torch_subprocess("rlthink.bench.sample_torch", {
        "config": dataclasses.asdict(config), "batches": list(args.batch),
        "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "warmup": args.warmup,
        "iters": args.iters, "allow_cpu": args.quick})
  except RuntimeError as e:
    return each({"torch_error": str(e)[-2000:]})
  if "skipped" in result:
    return each({"torch_skipped": result["skipped"]})
  versions = {k: result[k] for k in ("torch_version", "transformers_version")}
  return {r["batch"]: {"torch_tok_s": r["tokens_per_s"], "torch_median_s": r["median_s"],
                       "torch_spread": r["spread"], "torch_device": result["device"], **versions}
          for r in result["results"]}


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  with decode_settings.applied(args.decode_setting):
    return run(args)


def run(args) -> int:
  """Every case of the parsed `args`: torch baselines first, then rlthink's; prints the records."""
  configs = {m: get_preset(m, dtype=args.dtype, param_dtype=args.param_dtype)
             for m in args.model}
  # PyTorch first: this process has not started its JAX backend yet (importing jax does not),
  # so the GPU is all torch's.
  torch_results = {m: run_torch(configs[m], args) for m in args.model}

  devices = jax.devices("cpu")[:1] if args.quick else jax.devices()
  mesh = None
  if len(devices) > 1:
    shape = tuple(int(s) for s in args.mesh.split(",")) if args.mesh else None
    mesh = sharding.make_mesh(shape, devices)
  records = []
  with jax.default_device(devices[0]):
    info = common.device_info(devices[0])
    hbm = hardware.measure_hbm_bandwidth(device=devices[0])
    matmul = hardware.measure_matmul_flops(args.dtype, device=devices[0])
    for m in args.model:
      policy = rlthink.init_policy(configs[m], seed=0, mesh=mesh)
      cases = [(b, l, a) for b in args.batch for l in args.layers for a in args.attention]
      for batch, layers, attention in cases:
        rec = {"bench": "sample", "model": m, "batch": batch, "prompt_len": args.prompt_len,
               "new_tokens": args.new_tokens, "dtype": args.dtype,
               "param_dtype": args.param_dtype, "temperature": args.temperature,
               "layers": layers, "decode_attention": attention, "mesh_arg": args.mesh,
               "decode_settings": args.decode_setting}
        rec.update(bench_rlthink(policy, batch, args, m, layers, attention))
        if args.breakdown:
          rec.update(sample_breakdown.breakdown(policy, batch, args, layers == "unrolled", hbm))
        rec.update(torch_results[m][batch])
        torch_tps = rec.get("torch_tok_s")
        rec["torch_tok_s"] = torch_tps
        rec["ratio"] = None if torch_tps is None else rec["rlthink_tok_s"] / torch_tps
        # Data parallel over the devices: their bandwidths and matmul rates add up.
        rec.update(floor(configs[m], batch, args.prompt_len, args.new_tokens,
                         hbm * len(devices), matmul * len(devices)))
        rec["pct_floor"] = 100.0 * rec["rlthink_tok_s"] / rec["floor_tok_s"]
        rec.update({"measured_hbm_gbps": hbm / 1e9, "measured_matmul_tflops": matmul / 1e12,
                    "num_params": configs[m].num_params, "num_devices": len(devices),
                    "device": info["device"], "platform": info["platform"],
                    "jax_version": info["jax_version"]})
        common.emit(rec, args.out)
        records.append(rec)
  _print_table(records)
  return 0


def _print_table(records) -> None:
  """A short human-readable summary on stderr (stdout stays JSON lines)."""
  def fmt(x, spec):
    return "-" if x is None else format(x, spec)
  print(f"{'model':<14}{'batch':>6}{'layers':>9}{'attn':>7}{'tok/s':>11}{'ms/step':>9}{'torch tok/s':>12}"
        f"{'ratio':>7}{'floor tok/s':>12}{'% floor':>8}", file=sys.stderr)
  for r in records:
    print(f"{r['model']:<14}{r['batch']:>6}{r['layers']:>9}{r['decode_attention']:>7}"
          f"{r['rlthink_tok_s']:>11.0f}"
          f"{r['rlthink_ms_per_step']:>9.2f}{fmt(r['torch_tok_s'], '.0f'):>12}"
          f"{fmt(r['ratio'], '.2f'):>7}{r['floor_tok_s']:>12.0f}{r['pct_floor']:>8.1f}",
          file=sys.stderr)


if __name__ == "__main__":
  raise SystemExit(main())
