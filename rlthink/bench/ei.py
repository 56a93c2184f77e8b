"""`rlthink bench ei`: one Expert Iteration round at scale, timed phase by phase (not a unit test).

The round of `rlthink.algorithms.expert_iteration` on a random-init model: sample K completions of
each of P prompts (prompt_len tokens), verify every completion with the arithmetic task's
verifier (`rlthink.bench.iteration`: text from a stand-in tokenizer), then one epoch of SFT on ALL
the samples (none filtered, so the timing does not depend on a random model's accuracy).

Lengths: --lengths forced (default) runs every completion to new_tokens; --lengths longtail stops
each one at its own length drawn as in `rlthink bench rollout` (log-normal, mean --mean_frac of
new_tokens, a few at the cap): the shape of real reasoning rollouts, where most rows stop early.
--max_slots samples with continuous batching (`rlthink.sampling.continuous`), --sample_chunks K
in K calls dispatched ahead (`sampling.sample_async`), each verified while the next samples.

Phases (seconds; the sampler and the train step are compiled before, by an untimed call of the
same shapes and by the first step, whose time is left out and made up by the mean step):
  sample, verify (exposed: not overlapped with sampling), old_logprobs (0: EI's update is SFT,
  no ratio), prepare (the SFT batches), update (one epoch of `rlthink.train.sft_loss` steps).
One JSON line per model on stdout (and appended to --out). Runs without gin, TFDS, grain and
tensorboardX.

    python -m rlthink.bench.ei --model qwen2.5-0.5b qwen2.5-1.5b --lengths longtail --max_slots 256
    python -m rlthink.bench.ei --quick          # tiny model on CPU
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import rlthink
from rlthink.bench import common, iteration, rollout
from rlthink.sampling import sample_async
from rlthink.sampling.rollouts import concat_rollouts
from rlthink.train import OptimizerConfig, create_state, make_optimizer, make_train_step
from rlthink.train import sft_loss, shard_batch
from rlthink.train.batching import SequenceBatcher


def _args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench ei", description=__doc__.split("\n")[0])
  p.add_argument("--model", action="extend", nargs="+",
                 help="presets (default qwen2.5-0.5b; tiny with --quick)")
  p.add_argument("--prompts", type=int, default=256)
  p.add_argument("--samples", type=int, default=8, help="K completions per prompt")
  p.add_argument("--prompt_len", type=int, default=128)
  p.add_argument("--new_tokens", type=int, default=256)
  p.add_argument("--lengths", choices=("forced", "longtail"), default="forced")
  p.add_argument("--mean_frac", type=float, default=0.25, help="longtail: E[length] / new_tokens")
  p.add_argument("--max_slots", type=int, help="continuous batching with this many rows")
  p.add_argument("--sample_chunks", type=int, default=1,
                 help="sampler calls, each verified while the next samples")
  p.add_argument("--train_batch", type=int, default=32, help="sequences per SFT step")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--quick", action="store_true", help="tiny model and sizes, CPU smoke test")
  p.add_argument("--out", help="append the JSON line to this file")
  args = p.parse_args(argv)
  if args.quick:
    args.prompts, args.samples = 8, 2
    args.prompt_len, args.new_tokens, args.train_batch = 16, 16, 8
  args.model = args.model or ["tiny" if args.quick else "qwen2.5-0.5b"]
  if args.prompts % args.sample_chunks:
    p.error(f"--sample_chunks {args.sample_chunks} must divide --prompts {args.prompts}")
  return args


def _sample(policy, prompts, limits, args, verify):
  """All rows in --sample_chunks calls, chunk k verified while chunk k + 1 samples:
  (rollouts, rewards, the PhaseClock of sample / verify)."""
  clock = iteration.PhaseClock()
  chunks = np.array_split(np.arange(len(prompts)), args.sample_chunks)
  rows = lambda k: np.concatenate([np.arange(i * args.samples, (i + 1) * args.samples)
                                   for i in chunks[k]])
  launch = lambda k: sample_async(
      policy, prompts[chunks[k]], max_new_tokens=args.new_tokens, temperature=1.0,
      num_samples=args.samples, seed=k, stop_tokens=(), max_slots=args.max_slots,
      max_new_tokens_per_request=limits[rows(k)])
  pending, parts, rewards = launch(0), [], []
  for k in range(len(chunks)):
    ahead = launch(k + 1) if k + 1 < len(chunks) else None
    ro = pending.result()
    clock.lap("sample")
    if not np.array_equal(ro.lengths, limits[rows(k)]):
      raise RuntimeError("a completion's length differs from its forced one")
    rewards.append(verify([ro.completion(r) for r in range(ro.num_rows)], args.samples))
    clock.lap("verify")
    parts.append(ro)
    pending = ahead
  return concat_rollouts(parts), np.concatenate(rewards), clock


def run(name: str, args, verify) -> dict:
  policy = rlthink.init_policy(name, seed=0, dtype=args.dtype)
  config = policy.config
  prompts = iteration.random_prompts(config.vocab_size, args.prompts, args.prompt_len)
  rows = args.prompts * args.samples
  if args.lengths == "longtail":
    limits = rollout.workload(config.vocab_size, rows, args.samples, 1, args.new_tokens,
                              args.mean_frac, 1.0, seed=0).lengths
  else:
    limits = np.full((rows,), args.new_tokens, np.int32)

  start = time.perf_counter()  # compiles: the same programs, every completion one token
  _sample(policy, prompts, np.ones_like(limits), args, verify)
  compile_s = time.perf_counter() - start
  rollouts, rewards, clock = _sample(policy, prompts, limits, args, verify)
  clock.times["old_logprobs_s"] = 0.0  # SFT: no ratio, no old log-probs

  sequences = [(rollouts.prompt(r), rollouts.completion(r)) for r in range(rollouts.num_rows)]
  batcher = SequenceBatcher(sequences, args.train_batch, args.prompt_len + args.new_tokens,
                            pad_id=0, seed=0)
  steps = batcher.steps_per_epoch
  batches = [shard_batch(batcher(i), None) for i in range(steps)]
  jax.block_until_ready(batches)
  clock.lap("prepare")
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-5, clip_norm=1.0), steps)
  state = create_state(policy.params, optimizer, seed=0, copy=False)
  step_fn = make_train_step(sft_loss(config), optimizer, state)
  state, metrics = step_fn(state, batches[0])  # compiles; its time is made up below
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(1, steps):
    state, metrics = step_fn(state, batches[i])
  jax.block_until_ready(metrics)
  clock.times["update_s"] = (time.perf_counter() - start) * steps / max(steps - 1, 1)

  times = clock.times
  total = sum(times.values())
  sampled = int(np.sum(rollouts.lengths))
  trained = steps * args.train_batch * (args.prompt_len + args.new_tokens)
  return {"bench": "ei", "model": name, "prompts": args.prompts, "samples": args.samples,
          "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
          "lengths": args.lengths, "max_slots": args.max_slots,
          "sample_chunks": args.sample_chunks, "rows": rows, "sampled_tokens": sampled,
          **times, "total_s": total,
          **{f"{k[:-2]}_frac": v / total for k, v in times.items()},
          "sample_tok_s": sampled / times["sample_s"],
          "verify_rows_s": rows / max(times["verify_s"], 1e-9),
          "update_tok_s": trained / times["update_s"], "decode_steps": int(rollouts.decode_steps),
          "train_steps": steps, "train_batch": args.train_batch, "sample_compile_s": compile_s,
          "mean_reward": float(np.mean(rewards)), "last_loss": float(metrics["loss"]),
          "device_peak_memory_gb": (common.peak_memory_bytes() or 0) / 1e9 or None,
          **common.device_info()}


def main(argv: list[str] | None = None) -> int:
  args = _args(argv)
  verify = iteration.make_verifier(args.prompts)
  for name in args.model:
    common.emit(run(name, args, verify), args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
