"""`rlthink bench rollout`: useful tokens/s of RL-shaped rollouts, continuous vs static batching.

The workload (`workload`): `requests` completions of random `prompt_len`-token prompts,
`samples` per prompt (request i * samples + j is sample j of prompt i), each stopped at its own
length drawn from a long-tailed distribution: L = clip(round(exp(mu + sigma * z)), 1, C), z
standard normal, C = --max_new_tokens (default 1024), sigma = --sigma (default 1.0), mu chosen so
that E[L] = --mean_frac * C (default 0.25: mean 256 of 1024; median about 0.6 of the mean, and
about 3 % of the rows run to C). Lengths are forced (`max_new_tokens_per_request`, no stop
token), so every system does exactly the same useful work: sum(L) tokens.

Systems, in one run on one randomly initialized preset (compute dtype --dtype, float32 masters):
  continuous  `rlthink.sample(..., max_slots=--slots)`: one call, each slot refilled as soon as
              its request ends (`rlthink.sampling.continuous`).
  static      `rlthink.sample` on consecutive batches of --slots requests (slots / samples
              prompts a call), each running until its longest request ends; calls pipelined
              (the next dispatched before the previous one is read back).
  torch       transformers `generate` (static cache, bf16, SDPA, temperature 1) on the first
              --torch_requests requests in batches of --slots rows, each row forced to its length
              by a logits processor (eos at its last position, never before); in a child
              process (`rlthink.bench.rollout_torch`), before this process starts JAX.
Useful tokens/s = sum(L) of the requests a system ran / its wall seconds (one timed run after an
untimed one of the same shapes with every length 1, which compiles). One JSON line per (model,
slots) on stdout (and appended to --out), a table on stderr:

    {"bench": "rollout", "model", "slots", "requests", "useful_tokens", "continuous_tok_s",
     "static_tok_s", "torch_tok_s", "continuous_vs_static", "continuous_vs_torch", ...}

    python -m rlthink.bench.rollout --model qwen2.5-0.5b qwen2.5-1.5b --out rollout.jsonl
    python -m rlthink.bench.rollout --quick          # tiny model on CPU, under a minute

Runs where gin, TFDS, grain and tensorboardX are not installed (the accelerator image).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import sys
import time
from statistics import NormalDist

import jax
import numpy as np

import rlthink
from rlthink.bench import common
from rlthink.models.presets import get_preset
from rlthink.sampling import SlotOptions, sample, sample_async

DEFAULT_MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")


def parse_args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench rollout", description=__doc__.split("\n")[0])
  p.add_argument("--model", action="extend", nargs="+",
                 help=f"presets (default {' '.join(DEFAULT_MODELS)}; tiny with --quick)")
  p.add_argument("--requests", type=int, help="completions (default 2048; 48 --quick)")
  p.add_argument("--samples", type=int, help="completions per prompt (default 8; 4 --quick)")
  p.add_argument("--slots", type=int, action="extend", nargs="+",
                 help="decode rows (default 256; 8 --quick); several values: a case each")
  p.add_argument("--prompt_len", type=int, help="prompt tokens (default 128; 12 --quick)")
  p.add_argument("--max_new_tokens", type=int, help="C (default 1024; 64 --quick)")
  p.add_argument("--mean_frac", type=float, default=0.25, help="E[length] / C (default 0.25)")
  p.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma (default 1.0)")
  p.add_argument("--prefill_chunk", type=int, default=256,
                 help="continuous: prompt tokens per prefill step (SlotOptions.prefill_chunk)")
  p.add_argument("--prefill_prompts", type=int, default=16,
                 help="continuous: prompts prefilled together (SlotOptions.prefill_prompts)")
  p.add_argument("--refills_per_step", type=int, default=8,
                 help="continuous: the most slots refilled per step (SlotOptions)")
  p.add_argument("--systems", nargs="+", choices=("continuous", "static", "torch"),
                 default=["continuous", "static", "torch"])
  p.add_argument("--torch_requests", type=int,
                 help="requests the torch baseline runs (default: one batch of --slots)")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype of every system")
  p.add_argument("--seed", type=int, default=0, help="prompts, lengths and sampling seed")
  p.add_argument("--quick", action="store_true", help="tiny model and sizes on CPU: a smoke test")
  p.add_argument("--out", help="append the JSON lines to this file")
  args = p.parse_args(argv)
  quick = args.quick
  defaults = dict(requests=48 if quick else 2048, samples=4 if quick else 8,
                  prompt_len=12 if quick else 128, max_new_tokens=64 if quick else 1024)
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  args.model = args.model or (["tiny"] if quick else list(DEFAULT_MODELS))
  args.slots = args.slots or [8 if quick else 256]
  for slots in args.slots:
    if slots % args.samples or args.requests % slots:
      p.error(f"--slots {slots} must be a multiple of --samples {args.samples} and divide "
              f"--requests {args.requests} (static batches of whole prompts)")
  if not 0 < args.mean_frac < 1 or args.sigma <= 0:
    p.error("--mean_frac must be in (0, 1) and --sigma > 0")
  return args


# ------------------------------------------------------------------------------------------------
# The workload.


def _clipped_mean(mu: float, sigma: float, cap: int, z: np.ndarray) -> float:
  return float(np.mean(np.clip(np.round(np.exp(mu + sigma * z)), 1, cap)))


def length_distribution_mu(cap: int, mean_frac: float, sigma: float) -> float:
  """mu of the log-normal whose lengths, rounded and clipped to [1, cap], average mean_frac * cap
  (by bisection over a fixed grid of normal quantiles: deterministic)."""
  z = np.asarray([NormalDist().inv_cdf((i + 0.5) / 20000) for i in range(20000)])
  lo, hi = -5.0, math.log(cap) + 5 * sigma
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if _clipped_mean(mid, sigma, cap, z) < mean_frac * cap else (lo, mid)
  return (lo + hi) / 2


@dataclasses.dataclass(frozen=True)
class Workload:
  prompts: np.ndarray    # int32[requests / samples, prompt_len]
  lengths: np.ndarray    # int32[requests], request i * samples + j is sample j of prompt i
  samples: int


def workload(vocab: int, requests: int, samples: int, prompt_len: int, cap: int,
             mean_frac: float, sigma: float, seed: int) -> Workload:
  """The benchmark's prompts and forced lengths (see the module docstring)."""
  rng = np.random.default_rng(seed)
  mu = length_distribution_mu(cap, mean_frac, sigma)
  lengths = np.clip(np.round(np.exp(mu + sigma * rng.standard_normal(requests))), 1, cap)
  prompts = rng.integers(0, vocab, (requests // samples, prompt_len), dtype=np.int32)
  return Workload(prompts, lengths.astype(np.int32), samples)


# ------------------------------------------------------------------------------------------------
# rlthink.


def _check(ro, lengths: np.ndarray, what: str) -> None:
  if not np.array_equal(ro.lengths, lengths):
    raise RuntimeError(f"{what}: completion lengths differ from the forced ones; the benchmark "
                       "must force every length")


def run_continuous(policy, work: Workload, slots: int, args) -> dict:
  options = SlotOptions(prefill_prompts=args.prefill_prompts, prefill_chunk=args.prefill_chunk,
                        refills_per_step=args.refills_per_step)
  call = lambda lengths: sample(
      policy, work.prompts, max_new_tokens=args.max_new_tokens, num_samples=work.samples,
      temperature=1.0, seed=args.seed, stop_tokens=(), max_slots=slots, slot_options=options,
      max_new_tokens_per_request=lengths)
  start = time.perf_counter()
  call(np.ones_like(work.lengths))  # compiles: the same program, every request one token
  first = time.perf_counter() - start
  start = time.perf_counter()
  ro = call(work.lengths)
  wall = time.perf_counter() - start
  _check(ro, work.lengths, "continuous")
  useful = int(work.lengths.sum())
  steps = int(ro.decode_steps)
  return {"continuous_tok_s": useful / wall, "continuous_s": wall, "continuous_steps": steps,
          "continuous_slot_use": useful / (steps * slots), "continuous_first_call_s": first,
          "continuous_mean_logprob": float(ro.logprobs[ro.completion_mask].mean())}


def run_static(policy, work: Workload, slots: int, args) -> dict:
  per_call = slots // work.samples
  calls = len(work.prompts) // per_call
  options = dict(max_new_tokens=args.max_new_tokens, num_samples=work.samples, temperature=1.0,
                 stop_tokens=())

  def launch(i, lengths):
    return sample_async(policy, work.prompts[i * per_call:(i + 1) * per_call], seed=args.seed + i,
                        max_new_tokens_per_request=lengths[i * slots:(i + 1) * slots], **options)

  start = time.perf_counter()
  sample(policy, work.prompts[:per_call], seed=0, **options,
         max_new_tokens_per_request=np.ones((slots,), np.int32))  # compiles
  first = time.perf_counter() - start
  start = time.perf_counter()
  pending, steps = launch(0, work.lengths), 0
  for i in range(calls):
    ahead = launch(i + 1, work.lengths) if i + 1 < calls else None  # the device stays busy
    ro = pending.result()
    _check(ro, work.lengths[i * slots:(i + 1) * slots], f"static call {i}")
    steps += int(ro.decode_steps)
    pending = ahead
  wall = time.perf_counter() - start
  useful = int(work.lengths.sum())
  return {"static_tok_s": useful / wall, "static_s": wall, "static_steps": steps,
          "static_slot_use": useful / (steps * slots), "static_calls": calls,
          "static_first_call_s": first}


# ------------------------------------------------------------------------------------------------
# transformers, in a child process.


def run_torch(config, slots: int, args) -> dict:
  if "torch" not in args.systems:
    return {}
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    return {"torch_skipped": "torch or transformers is not installed"}
  requests = args.torch_requests or slots
  try:
    result = common.run_torch_subprocess("rlthink.bench.rollout_torch", {
        "config": dataclasses.asdict(config), "slots": slots, "requests": requests,
        "all_requests": args.requests,
        "samples": args.samples, "prompt_len": args.prompt_len,
        "max_new_tokens": args.max_new_tokens, "mean_frac": args.mean_frac,
        "sigma": args.sigma, "seed": args.seed, "allow_cpu": args.quick})
  except RuntimeError as e:
    return {"torch_error": str(e)[-2000:]}
  if "skipped" in result:
    return {"torch_skipped": result["skipped"]}
  return {f"torch_{k}": v for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  configs = {}
  for m in args.model:
    config = get_preset(m, dtype=args.dtype, param_dtype="float32")
    need = args.prompt_len + args.max_new_tokens
    configs[m] = config if config.max_seq_len >= need else config.replace(max_seq_len=need)
  # PyTorch first: this process has not started its JAX backend yet, so the GPU is all torch's.
  torch_results = {(m, s): run_torch(configs[m], s, args) for m in args.model for s in args.slots}

  device = jax.devices("cpu")[0] if args.quick else jax.devices()[0]
  records = []
  with jax.default_device(device):
    info = common.device_info(device)
    for m in args.model:
      config = configs[m]
      policy = rlthink.init_policy(config, seed=0)
      work = workload(config.vocab_size, args.requests, args.samples, args.prompt_len,
                      args.max_new_tokens, args.mean_frac, args.sigma, args.seed)
      for slots in args.slots:
        rec = {"bench": "rollout", "model": m, "slots": slots, "requests": args.requests,
               "samples": args.samples, "prompt_len": args.prompt_len,
               "max_new_tokens": args.max_new_tokens, "mean_frac": args.mean_frac,
               "sigma": args.sigma, "useful_tokens": int(work.lengths.sum()),
               "mean_length": float(work.lengths.mean()),
               "frac_at_max": float(np.mean(work.lengths == args.max_new_tokens)),
               "ideal_steps": int(math.ceil(work.lengths.sum() / slots)),
               "dtype": args.dtype, "num_params": config.num_params}
        if "continuous" in args.systems:
          rec.update(run_continuous(policy, work, slots, args))
        if "static" in args.systems:
          rec.update(run_static(policy, work, slots, args))
        rec.update(torch_results[(m, slots)])
        c, s, t = (rec.get(k) for k in ("continuous_tok_s", "static_tok_s", "torch_tok_s"))
        rec["continuous_vs_static"] = c / s if c and s else None
        rec["continuous_vs_torch"] = c / t if c and t else None
        rec["static_vs_torch"] = s / t if s and t else None
        peak = common.peak_memory_bytes(device)
        rec["device_peak_memory_gb"] = None if peak is None else peak / 1e9
        rec.update(info)
        common.emit(rec, args.out)
        records.append(rec)
      del policy
  _print_table(records)
  return 0


def _print_table(records) -> None:
  def fmt(x, spec):
    return "-" if x is None else format(x, spec)
  print(f"{'model':<14}{'slots':>6}{'requests':>9}{'continuous':>12}{'static':>10}{'torch':>10}"
        f"{'c/s':>7}{'c/torch':>8}  (useful tokens/s)", file=sys.stderr)
  for r in records:
    print(f"{r['model']:<14}{r['slots']:>6}{r['requests']:>9}"
          f"{fmt(r.get('continuous_tok_s'), '.0f'):>12}{fmt(r.get('static_tok_s'), '.0f'):>10}"
          f"{fmt(r.get('torch_tok_s'), '.0f'):>10}{fmt(r['continuous_vs_static'], '.2f'):>7}"
          f"{fmt(r['continuous_vs_torch'], '.2f'):>8}", file=sys.stderr)


if __name__ == "__main__":
  raise SystemExit(main())
