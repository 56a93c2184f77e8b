"""`rlthink bench train`: tokens/s and MFU of one jitted AdamW training step, against PyTorch.

The step timed is the one every rlthink algorithm trains with: `rlthink.train.make_train_step`
over `rlthink.train.sft_loss` (forward, next-token cross-entropy from the hidden states in chunks,
backward), `rlthink.train.make_optimizer`'s AdamW (clipped at --clip_norm), on a state from
`rlthink.train.create_state`, on random tokens. fp32 master parameters and AdamW state, bf16
compute (the decoder casts each weight at use), float32 log-probs and loss, the state donated so
the update happens in place. `--loss logits` swaps in the full float32 logits head for
comparison. The layers are unrolled by default (`--scan_unroll 0`; 1 is the rolled `lax.scan`).
With several devices the batch is sharded over a (data, fsdp, tensor) mesh (default: all fsdp).

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
import importlib.util
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from rlthink import ops, sharding, train
from rlthink.bench import common, hardware, profile
from rlthink.models import decoder
from rlthink.models.presets import get_preset

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
                 help="cast the fp32 params to the compute dtype once, before the forward, "
                 "instead of at each use (AdamW still updates fp32 params and moments)")
  p.add_argument("--lr", type=float, default=3e-4)
  p.add_argument("--clip_norm", type=float, default=train.OptimizerConfig.clip_norm,
                 help="gradient clipping norm of the optimizer (OptimizerConfig.clip_norm; "
                 "0: none)")
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


def make_loss(config, mesh, loss: str = "fused", chunk: int = 256,
              save_probs: bool | None = None, cast_params: bool = False):
  """The loss the benchmarked step differentiates: `loss_fn(params, batch, rng) -> (loss,
  metrics)` for `rlthink.train.make_train_step`.

  "fused": `rlthink.train.sft_loss` (what SFT and Expert Iteration train with: log-probs from the
  hidden states in chunks of `chunk` positions, `ops.fused_next_token_logprobs`); "logits": the
  decoder's float32 logits head and `ops.next_token_logprobs`, for comparison. cast_params: cast
  the float32 params to the compute dtype once, before the forward, instead of at each use.
  """
  if loss == "fused":
    loss_fn = train.sft_loss(config, mesh, chunk, save_probs)
  elif loss == "logits":
    def loss_fn(params, batch, rng):
      del rng
      outputs, _ = decoder.forward(config, params, batch["tokens"], mesh=mesh)
      mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
      value = -ops.masked_mean(ops.next_token_logprobs(outputs["logits"], batch["tokens"]), mask)
      return value, {"loss": value}
  else:
    raise ValueError(f"loss={loss!r} is not one of ('fused', 'logits')")
  if not cast_params:
    return loss_fn
  return lambda params, batch, rng: loss_fn(
      jax.tree.map(lambda p: p.astype(config.dtype), params), batch, rng)


def make_optimizer(args) -> optax.GradientTransformation:
  """`rlthink.train`'s AdamW at --lr (constant), weight decay 0.1, clipped at --clip_norm."""
  cfg = train.OptimizerConfig(learning_rate=args.lr, weight_decay=0.1,
                              clip_norm=args.clip_norm or None)
  return train.make_optimizer(cfg, total_steps=max(args.steps + args.warmup, 1))


def bench_jax(config, args, devices, name: str = "model") -> dict:
  """Compiles and times `rlthink.train.make_train_step`'s step for one model config on random
  tokens; returns the JAX half of the record."""
  start = time.perf_counter()
  mesh = None
  if len(devices) > 1:
    shape = tuple(int(s) for s in args.mesh.split(",")) if args.mesh else None
    mesh = sharding.make_mesh(shape, devices)
  optimizer = make_optimizer(args)
  params = decoder.init_params(config, jax.random.key(0), mesh=mesh)
  state = train.create_state(params, optimizer, seed=0, copy=False)
  del params
  tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq), 0, config.vocab_size)
  batch = train.shard_batch({"tokens": tokens, "loss_mask": jnp.ones_like(tokens)}, mesh)
  save_probs = {"save": True, "recompute": False}.get(args.probs)
  if save_probs is None:  # what sft_loss(save_probs=None) decides, recorded
    save_probs = ops.default_save_probs(args.batch, args.seq, config.vocab_size, config.dtype)
  loss_fn = make_loss(config, mesh, args.loss, args.chunk, save_probs, args.cast_params)
  step = train.make_train_step(loss_fn, optimizer, state)
  init_s = time.perf_counter() - start
  _progress(name, f"state ready in {init_s:.1f} s")
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  _progress(name, f"compiled in {compile_s:.1f} s")

  box = [state]

  def one_step():
    box[0], metrics = compiled(box[0], batch)
    return box[0], metrics

  losses = []
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
  """Writes the optimized HLO (<name>.hlo.txt), a profiler trace of 3 steps (<name>/) and its
  kernel-time summary (<name>.ops.txt)."""
  os.makedirs(profile_dir, exist_ok=True)
  with open(os.path.join(profile_dir, name + ".hlo.txt"), "w") as f:
    f.write(compiled.as_text())
  trace_dir = os.path.join(profile_dir, name)
  with jax.profiler.trace(trace_dir):
    for _ in range(3):
      jax.block_until_ready(one_step())
  try:
    summary = profile.profile_summary(trace_dir, steps=3, hlo_text=compiled.as_text())
  except Exception as e:  # a summary is a convenience; the trace itself is written
    summary = f"no summary of {trace_dir}: {type(e).__name__}: {e}\n"
  with open(os.path.join(profile_dir, name + ".ops.txt"), "w") as f:
    f.write(summary)


def run_torch(config, args) -> dict:
  """The PyTorch half of the record (or torch_skipped / torch_error), from a child process."""
  if args.no_torch:
    return {"torch_skipped": "--no_torch"}
  try:
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
  configs = {m: get_preset(m, dtype=args.dtype, param_dtype="float32", remat=args.remat,
                          scan_unroll=args.scan_unroll)
             for m in args.model}
  # PyTorch first: this process has not started its JAX backend yet (importing jax does not),
  # so the GPU is all torch's.
  torch_results = {m: run_torch(configs[m], args) for m in args.model}

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
             "cast_params": args.cast_params, "clip_norm": args.clip_norm or None,
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
