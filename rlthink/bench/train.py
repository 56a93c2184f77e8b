"""`rlthink bench train`: tokens/s and MFU of one jitted AdamW training step, against PyTorch.

The step is what RL fine-tuning runs at its core: forward, next-token cross-entropy, backward and
an AdamW update, on random tokens. fp32 master parameters and AdamW state, bf16 compute (the
decoder casts each weight at use), float32 log-probs and loss, compiled once with the train state
donated so the update happens in place. By default the loss is what `rlthink.train.sft_loss` runs
(`ops.fused_next_token_logprobs` on the decoder's hidden states: float32 logits a chunk at a time,
bf16 backward matmuls; `--loss logits` takes the full float32 logits head instead) and the layers
are unrolled (`--scan_unroll 0`; 1 is the rolled `lax.scan`). With several devices the batch is
sharded over a (data, fsdp, tensor) mesh (default: all fsdp).

MFU = tokens/s * ModelConfig.flops_per_token(seq) / (devices * peak), with the datasheet dense bf16
peak (`mfu`) and with the matmul rate measured here (`mfu_measured_peak`). Each case prints one
JSON line (and appends it to --out). The PyTorch baseline (`rlthink.bench.train_torch`) runs in a
child process, before this process starts its JAX backend, so the two never share GPU memory.

    python -m rlthink.bench.train --model qwen2.5-1.5b --batch 8 --seq 1024 --out bench.jsonl
    python -m rlthink.bench.train --quick          # tiny model on CPU, under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

from rlthink.bench import common

DEFAULT_MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")


def parse_args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench train", description=__doc__.split("\n")[0])
  p.add_argument("--model", action="append", help="preset name (repeatable); default "
                 f"{' and '.join(DEFAULT_MODELS)} ('tiny' with --quick)")
  p.add_argument("--batch", type=int, help="sequences per step (default 8; 8 with --quick)")
  p.add_argument("--seq", type=int, help="tokens per sequence (default 1024; 64 with --quick)")
  p.add_argument("--steps", type=int, help="timed steps (default 20; 3 with --quick)")
  p.add_argument("--warmup", type=int, help="untimed steps after compilation (default 3; 1 quick)")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype (parameters stay float32)")
  p.add_argument("--attention", choices=("cudnn", "xla"),
                 help="attention kernel (default cudnn on GPU, xla elsewhere)")
  p.add_argument("--remat", action="store_true", help="rematerialize each layer in the backward")
  p.add_argument("--loss", choices=("fused", "logits"), default="fused",
                 help="fused: log-probs from the hidden states in chunks "
                 "(ops.fused_next_token_logprobs); logits: the float32 logits head")
  p.add_argument("--chunk", type=int, default=256, help="positions per chunk of the fused loss")
  p.add_argument("--probs", choices=("auto", "save", "recompute"), default="auto",
                 help="fused loss: keep the bf16 softmax for the backward (save) or recompute the "
                 "logits there; auto: as rlthink.train.sft_loss (save when it takes <= 4 GiB)")
  p.add_argument("--scan_unroll", type=int, default=0,
                 help="layers per scan iteration (ModelConfig.scan_unroll; default 0: unrolled)")
  p.add_argument("--cast_params", action="store_true",
                 help="cast the fp32 params to the compute dtype once, before the forward, so the "
                 "gradients come out in it (AdamW still updates fp32 params and moments)")
  p.add_argument("--lr", type=float, default=3e-4)
  p.add_argument("--mesh", help="mesh sizes data,fsdp,tensor, e.g. 1,-1,1 (used with >1 device)")
  p.add_argument("--no_torch", action="store_true", help="skip the PyTorch baseline")
  p.add_argument("--torch_mode", choices=("bf16", "autocast"), default="bf16",
                 help="baseline numerics, see rlthink.bench.train_torch (default bf16)")
  p.add_argument("--torch_compile", action="store_true", help="torch.compile the baseline model")
  p.add_argument("--quick", action="store_true", help="tiny model, tiny shapes, CPU: a smoke test")
  p.add_argument("--profile_dir", help="write an XLA profile of a few steps and the compiled HLO")
  p.add_argument("--out", help="append the JSON lines to this file")
  args = p.parse_args(argv)
  quick = args.quick
  defaults = dict(batch=8, seq=64 if quick else 1024, steps=3 if quick else 20,
                  warmup=1 if quick else 3)
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  args.model = args.model or (["tiny"] if quick else list(DEFAULT_MODELS))
  return args


def make_train_step(config, optimizer, mesh, loss: str = "fused", chunk: int = 256,
                    save_probs: bool = False, cast_params: bool = False):
  """train_step(state, tokens int32[B, T]) -> (state, {"loss"}); state = {"params", "opt_state"}.

  loss "fused": the decoder's hidden states into `ops.fused_next_token_logprobs` (what
  `rlthink.train.sft_loss` does); "logits": the float32 logits head and `ops.next_token_logprobs`.
  cast_params: differentiate with respect to a compute-dtype copy of the params (the decoder casts
  each weight at use anyway), so gradients are not widened to float32 before AdamW reads them.
  """
  import jax
  import jax.numpy as jnp
  import optax

  from rlthink import ops
  from rlthink.models import decoder

  def loss_fn(params, tokens):
    if loss == "logits":
      outputs, _ = decoder.forward(config, params, tokens, mesh=mesh)
      return -jnp.mean(ops.next_token_logprobs(outputs["logits"], tokens))
    outputs, _ = decoder.forward(config, params, tokens, heads=("hidden",), mesh=mesh)
    logp = ops.fused_next_token_logprobs(outputs["hidden"], decoder.unembedding(config, params),
                                         tokens, chunk, save_probs)
    return -jnp.mean(logp)

  def train_step(state, tokens):
    params = state["params"]
    if cast_params:
      params = jax.tree.map(lambda p: p.astype(config.dtype), params)
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, {
        "loss": loss}

  return train_step


def init_state(config, optimizer, mesh, seed: int = 0):
  """fp32 params and AdamW state, created in their shardings; returns (state, state_shardings)."""
  import jax
  import optax
  from jax.sharding import NamedSharding, PartitionSpec

  from rlthink.models import decoder

  params = decoder.init_params(config, jax.random.key(seed), mesh=mesh)
  if mesh is None:
    return {"params": params, "opt_state": jax.jit(optimizer.init)(params)}, None
  p_shardings = decoder.param_shardings(config, mesh)
  opt_shardings = optax.tree_map_params(
      optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, params), p_shardings,
      transform_non_params=lambda _: NamedSharding(mesh, PartitionSpec()))
  opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(params)
  return {"params": params, "opt_state": opt_state}, {"params": p_shardings,
                                                      "opt_state": opt_shardings}


def bench_jax(config, args, devices, name: str = "model") -> dict:
  """Compiles and times the step for one model config; returns the JAX half of the record."""
  import jax
  import optax

  from rlthink import ops, sharding

  start = time.perf_counter()
  mesh = None
  if len(devices) > 1:
    shape = tuple(int(s) for s in args.mesh.split(",")) if args.mesh else None
    mesh = sharding.make_mesh(shape, devices)
  optimizer = optax.adamw(args.lr, b1=0.9, b2=0.95, weight_decay=0.1)
  state, state_shardings = init_state(config, optimizer, mesh)
  tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq), 0, config.vocab_size)
  tok_sharding = None if mesh is None else sharding.batch_sharding(mesh, tokens.shape)
  if tok_sharding is not None:
    tokens = jax.device_put(tokens, tok_sharding)
  save_probs = {"save": True, "recompute": False}.get(args.probs)
  if save_probs is None:
    save_probs = ops.default_save_probs(args.batch, args.seq, config.vocab_size, config.dtype)
  step = jax.jit(make_train_step(config, optimizer, mesh, args.loss, args.chunk, save_probs,
                                 args.cast_params), donate_argnums=0,
                 in_shardings=None if mesh is None else (state_shardings, tok_sharding),
                 out_shardings=None if mesh is None else (state_shardings, None))
  init_s = time.perf_counter() - start
  _progress(name, f"state ready in {init_s:.1f} s")
  start = time.perf_counter()
  compiled = step.lower(state, tokens).compile()
  compile_s = time.perf_counter() - start
  _progress(name, f"compiled in {compile_s:.1f} s")

  box = [state]
  losses = []

  def one_step():
    box[0], metrics = compiled(box[0], tokens)
    return box[0], metrics

  start = time.perf_counter()
  losses.append(float(one_step()[1]["loss"]))
  first_step_s = time.perf_counter() - start
  _progress(name, f"first step in {first_step_s:.1f} s")
  times = common.time_fn(one_step, warmup=max(args.warmup - 1, 0), iters=args.steps)
  losses.append(float(one_step()[1]["loss"]))
  if args.profile_dir:
    _profile(compiled, one_step, f"train_{name}_{args.batch}x{args.seq}", args.profile_dir)
  step_s = statistics.median(times)
  record = {"tokens_per_s": args.batch * args.seq / step_s, "step_ms": 1e3 * step_s,
            "step_spread": (max(times) - min(times)) / step_s, "init_s": init_s,
            "compile_s": compile_s, "first_step_s": first_step_s, "save_probs": save_probs,
            "loss_first": losses[0], "loss_last": losses[-1]}
  record.update(_memory(compiled, devices[0]))
  return record


def _progress(name: str, what: str) -> None:
  print(f"[bench train] {name}: {what}", file=sys.stderr, flush=True)


def _memory(compiled, device) -> dict:
  """Per-device footprint of the step from the compiler, and the allocator's high-water mark."""
  out = {"peak_memory_gb": None}
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)
    out["peak_memory_gb"] = total / 1e9
  except Exception:  # not every backend reports it
    pass
  peak = common.peak_memory_bytes(device)
  out["device_peak_memory_gb"] = None if peak is None else peak / 1e9
  return out


def _profile(compiled, one_step, name: str, profile_dir: str) -> None:
  """Writes the optimized HLO (<name>.hlo.txt) and a profiler trace of 3 steps (<name>/)."""
  import jax

  os.makedirs(profile_dir, exist_ok=True)
  with open(os.path.join(profile_dir, name + ".hlo.txt"), "w") as f:
    f.write(compiled.as_text())
  trace_dir = os.path.join(profile_dir, name)
  with jax.profiler.trace(trace_dir):
    for _ in range(3):
      jax.block_until_ready(one_step())
  try:
    summary = profile_summary(trace_dir, steps=3, hlo_text=compiled.as_text())
  except Exception as e:  # a summary is a convenience; the trace itself is written
    summary = f"no summary of {trace_dir}: {type(e).__name__}: {e}\n"
  with open(os.path.join(profile_dir, name + ".ops.txt"), "w") as f:
    f.write(summary)


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
  import re

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
  import collections
  import glob
  import re

  import jax

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


def run_torch(config, args) -> dict:
  """The PyTorch half of the record (or torch_skipped / torch_error), from a child process."""
  if args.no_torch:
    return {"torch_skipped": "--no_torch"}
  try:
    import importlib.util
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
      return {"torch_skipped": "torch or transformers is not installed"}
    result = common.run_torch_subprocess("rlthink.bench.train_torch", {
        "config": dataclasses.asdict(config), "batch": args.batch, "seq": args.seq,
        "steps": args.steps, "warmup": args.warmup, "lr": args.lr, "mode": args.torch_mode,
        "remat": args.remat, "allow_cpu": args.quick, "compile": args.torch_compile})
  except RuntimeError as e:
    return {"torch_error": str(e)[-2000:]}
  if "skipped" in result:
    return {"torch_skipped": result["skipped"]}
  return {k if k.startswith(("torch_", "transformers_")) else f"torch_{k}": v
          for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  from rlthink.models.presets import get_preset
  configs = {m: get_preset(m, dtype=args.dtype, param_dtype="float32", remat=args.remat,
                          scan_unroll=args.scan_unroll)
             for m in args.model}
  # PyTorch first: this process has not started its JAX backend yet, so the GPU is all torch's.
  torch_results = {m: run_torch(configs[m], args) for m in args.model}

  import jax

  from rlthink.bench import hardware

  devices = jax.devices("cpu") if args.quick else jax.devices()
  platform = devices[0].platform
  attention = args.attention or ("cudnn" if platform == "gpu" else "xla")
  with jax.default_device(devices[0]):
    info = common.device_info(devices[0])
    matmul_flops = hardware.measure_matmul_flops(args.dtype, device=devices[0])
    hbm = hardware.measure_hbm_bandwidth(device=devices[0])
    peak = hardware.device_peak_flops(devices[0])
    records = []
    for m in args.model:
      config = configs[m].replace(attention_impl=attention)
      flops = config.flops_per_token(args.seq)
      rec = {"bench": "train", "model": m, "batch": args.batch, "seq": args.seq,
             "dtype": args.dtype, "attention": attention, "remat": args.remat,
             "loss": args.loss, "chunk": args.chunk,
             "cast_params": args.cast_params,
             "scan_unroll": args.scan_unroll, "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "num_devices": len(devices), "mesh_arg": args.mesh}
      rec.update(bench_jax(config, args, devices, m))
      rec.update(torch_results[m])
      rate = rec["tokens_per_s"] * flops / len(devices)
      rec["mfu"] = None if peak is None else rate / peak
      rec["mfu_measured_peak"] = rate / matmul_flops
      torch_tps = rec.get("torch_tokens_per_s")
      rec["torch_mfu"] = None if peak is None or torch_tps is None else (
          torch_tps * flops / len(devices) / peak)
      rec["ratio"] = None if torch_tps is None else rec["tokens_per_s"] / torch_tps
      rec.update({"flops_per_token": flops, "num_params": config.num_params,
                  "measured_matmul_tflops": matmul_flops / 1e12, "measured_hbm_gbps": hbm / 1e9,
                  "peak_tflops": None if peak is None else peak / 1e12,
                  "device": info["device"], "platform": platform,
                  "jax_version": info["jax_version"]})
      common.emit(rec, args.out)
      records.append(rec)
  _print_table(records)
  return 0


def _print_table(records) -> None:
  """A short human-readable summary on stderr (stdout stays JSON lines)."""
  def fmt(x, spec):
    return "-" if x is None else format(x, spec)
  print(f"{'model':<14}{'tok/s':>10}{'step ms':>9}{'MFU':>6}{'MFU*':>6}{'torch tok/s':>12}"
        f"{'torch MFU':>10}{'ratio':>7}{'GB':>7}   (MFU*: vs measured matmul rate)",
        file=sys.stderr)
  for r in records:
    print(f"{r['model']:<14}{r['tokens_per_s']:>10.0f}{r['step_ms']:>9.1f}{fmt(r['mfu'], '.3f'):>6}"
          f"{r['mfu_measured_peak']:>6.3f}{fmt(r.get('torch_tokens_per_s'), '.0f'):>12}"
          f"{fmt(r['torch_mfu'], '.3f'):>10}{fmt(r['ratio'], '.2f'):>7}"
          f"{fmt(r['peak_memory_gb'], '.1f'):>7}", file=sys.stderr)


if __name__ == "__main__":
  raise SystemExit(main())
