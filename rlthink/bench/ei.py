"""`rlthink bench ei`: one Expert Iteration round at scale, timed phase by phase (not a unit test).

The round of `rlthink.algorithms.expert_iteration` on a random-init model: sample K completions of
each of P prompts (prompt_len tokens, new_tokens forced: no early stop), verify every completion
with the arithmetic task's verifier, then one epoch of SFT on ALL the samples (none filtered, so
the timing does not depend on a random model's accuracy). Prints one JSON line with the time split
sample / verify / train and the throughput of each phase.

Verification needs text: the random model's ids are detokenized by a byte-level BPE tokenizer
trained here on arithmetic text (ids outside its vocabulary are mapped into it modulo its size) —
a stand-in for the model's own tokenizer, which is not available offline; the verifier's cost
depends only on the length of the text it reads.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import rlthink
from rlthink.bench import common
from rlthink.models.tokenizer import train_bpe_tokenizer
from rlthink.tasks import arithmetic
from rlthink.train import OptimizerConfig, create_state, make_optimizer, make_train_step
from rlthink.train import sft_loss, shard_batch
from rlthink.train.batching import SequenceBatcher


def _args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench ei", description=__doc__.split("\n")[0])
  p.add_argument("--model", default="qwen2.5-0.5b")
  p.add_argument("--prompts", type=int, default=256)
  p.add_argument("--samples", type=int, default=8, help="K completions per prompt")
  p.add_argument("--prompt_len", type=int, default=128)
  p.add_argument("--new_tokens", type=int, default=256)
  p.add_argument("--train_batch", type=int, default=32, help="sequences per SFT step")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--quick", action="store_true", help="tiny model and sizes, CPU smoke test")
  p.add_argument("--out", help="append the JSON line to this file")
  args = p.parse_args(argv)
  if args.quick:
    args.model, args.prompts, args.samples = "tiny", 8, 2
    args.prompt_len, args.new_tokens, args.train_batch = 16, 16, 8
  return args


def main(argv: list[str] | None = None) -> int:
  args = _args(argv)
  policy = rlthink.init_policy(args.model, seed=0, dtype=args.dtype)
  config = policy.config
  rng = np.random.default_rng(0)
  prompts = [rng.integers(0, config.vocab_size, args.prompt_len).tolist()
             for _ in range(args.prompts)]
  options = arithmetic.Options(**dict(arithmetic.Arithmetic.sizes["tiny"], size="tiny", seed=0))
  problems = []
  while len(problems) < args.prompts:
    problem = arithmetic.sample_problem(rng, options)
    if problem is not None:
      problems.append(dict(problem, id=str(len(problems))))
  task = arithmetic.Arithmetic(options)
  tokenizer = train_bpe_tokenizer([p["question"] + " " + " ".join(p["steps"]) for p in problems],
                                  vocab_size=512)

  def sample():
    out = rlthink.sample(policy, prompts, max_new_tokens=args.new_tokens, temperature=1.0,
                         num_samples=args.samples, seed=0, stop_tokens=())
    return out

  compile_start = time.perf_counter()
  sample()  # compile (same shapes as the timed call)
  compile_s = time.perf_counter() - compile_start
  start = time.perf_counter()
  rollouts = sample()
  sample_s = time.perf_counter() - start

  start = time.perf_counter()
  vocab = len(tokenizer)
  rewards = []
  for row in range(rollouts.num_rows):
    text = tokenizer.decode([t % vocab for t in rollouts.completion(row)], skip_special_tokens=True)
    rewards.append(task.verify(text, problems[row // args.samples]))
  verify_s = time.perf_counter() - start

  sequences = [(rollouts.prompt(r), rollouts.completion(r)) for r in range(rollouts.num_rows)]
  batcher = SequenceBatcher(sequences, args.train_batch, args.prompt_len + args.new_tokens,
                            pad_id=0, seed=0)
  steps = batcher.steps_per_epoch
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-5, clip_norm=1.0), steps)
  state = create_state(policy.params, optimizer, seed=0, copy=False)
  step_fn = make_train_step(sft_loss(config), optimizer, state)
  state, metrics = step_fn(state, shard_batch(batcher(0), None))  # compile; counted below too
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(1, steps):
    state, metrics = step_fn(state, shard_batch(batcher(i), None))
  jax.block_until_ready(metrics)
  train_s = (time.perf_counter() - start) * steps / max(steps - 1, 1)

  rows = rollouts.num_rows
  sampled_tokens = int(np.sum(rollouts.lengths))
  trained_tokens = steps * args.train_batch * (args.prompt_len + args.new_tokens)
  total = sample_s + verify_s + train_s
  record = {"bench": "ei", "model": args.model, "prompts": args.prompts, "samples": args.samples,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "rows": rows,
            "sample_s": sample_s, "verify_s": verify_s, "train_s": train_s, "total_s": total,
            "sample_frac": sample_s / total, "verify_frac": verify_s / total,
            "train_frac": train_s / total, "sample_tok_s": sampled_tokens / sample_s,
            "verify_rows_s": rows / verify_s, "train_tok_s": trained_tokens / train_s,
            "train_steps": steps, "train_batch": args.train_batch, "sample_compile_s": compile_s,
            "mean_reward": float(np.mean(rewards)), "last_loss": float(metrics["loss"]),
            "device_peak_memory_gb": (common.peak_memory_bytes() or 0) / 1e9 or None,
            **common.device_info()}
  common.emit(record, args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
