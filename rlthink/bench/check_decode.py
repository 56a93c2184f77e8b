"""`rlthink bench check_decode`: the compiled decode kernels against XLA, on the real device.

The tests run the Pallas decode kernels (`rlthink.models.decode_attention`, `decode_matvec`) in
Pallas' interpreter; this runs them compiled. It samples the same rollouts with
`decode_attention="pallas"` and `"xla"` for a Qwen2-style model with random q/k/v biases (so the
attention kernel adds biases, rotates and writes the cache: `write_kv`), at batch sizes that take
the one-row matvec kernels (1), chunked attention programs (3) and whole-row programs (300), and
prints one JSON line per case: the share of equal tokens and the largest log-prob gap before each
row's first differing token. Exits 1 when a gap exceeds TOLERANCE (1e-2 nats in float32, 0.1 in
bfloat16) or fewer tokens than MIN_EQUAL agree (a kernel far off changes the first token already,
before any log-prob can be compared): a wrong kernel (a missed slot, a wrong rotation) is far off;
rounding differences (TF32 dots, bf16 ties) are not (measured on an H200: float32 99.9-100 % equal
tokens, gap <= 4.1e-4; bfloat16 97.9-100 %, gap <= 5.8e-3).

    python3 -m rlthink.bench.check_decode                    # on the GPU, ~1 minute
    python3 -m rlthink.bench.check_decode --every_kernel     # every matvec role a kernel
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rlthink
from rlthink.bench import common
from rlthink.models import decode_matvec

TOLERANCE = {"float32": 1e-2, "bfloat16": 0.1}
# A rounding tie flips a token and the row's later tokens with it, more often in bfloat16.
MIN_EQUAL = {"float32": 0.9, "bfloat16": 0.5}


def parse_args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench check_decode",
                              description=__doc__.split("\n")[0])
  p.add_argument("--dtype", action="extend", nargs="+", choices=tuple(TOLERANCE),
                 help="compute dtypes (default: float32 bfloat16)")
  p.add_argument("--batch", action="extend", nargs="+", type=int,
                 help="prompts per case (default: 1 3 300)")
  p.add_argument("--new_tokens", type=int, default=48, help="tokens sampled per row")
  p.add_argument("--every_kernel", action="store_true",
                 help="run every matmul role of decode_matvec.LAYER_KERNELS as a kernel whatever "
                 "its weight size (KERNEL_MIN_SIZE emptied): the test model's weights are small")
  p.add_argument("--out", help="append the JSON lines to this file")
  args = p.parse_args(argv)
  args.dtype = args.dtype or list(TOLERANCE)
  args.batch = args.batch or [1, 3, 300]
  return args


def check_policy(dtype: str) -> rlthink.Policy:
  """A 2-layer Qwen2-style model (14 query heads, 2 KV heads of 64) with random q/k/v biases."""
  config = rlthink.ModelConfig(architecture="qwen2", qkv_bias=True, vocab_size=512,
                               hidden_size=256, intermediate_size=512, num_layers=2,
                               num_heads=14, num_kv_heads=2, head_dim=64, max_seq_len=256,
                               dtype=dtype)
  policy = rlthink.init_policy(config, seed=1)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.asarray(rng.normal(size=x.shape) * 0.5, x.dtype)
      if getattr(path[-1], "key", "").endswith("_bias") else x, policy.params)
  return policy.replace(params=params)


def check(policy: rlthink.Policy, batch: int, new_tokens: int) -> dict:
  """Samples the same random prompts (1-39 tokens) with the kernels and with XLA; returns the
  record's measurements."""
  rng = np.random.default_rng(batch)
  vocab = policy.config.vocab_size
  prompts = [rng.integers(0, vocab, int(n)).tolist() for n in rng.integers(1, 40, batch)]
  ours, xla = (rlthink.sample(policy, prompts, max_new_tokens=new_tokens, temperature=1.0,
                              seed=3, stop_tokens=(), decode_attention=attention)
               for attention in ("pallas", "xla"))
  equal = ours.completion_tokens == xla.completion_tokens
  agree = np.cumprod(equal, axis=1).astype(bool)  # up to each row's first differing token
  gap = float(np.max(np.abs(ours.logprobs - xla.logprobs) * agree))
  return {"equal_tokens": float(np.mean(equal)), "max_logprob_gap": gap}


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  saved = dict(decode_matvec.KERNEL_MIN_SIZE)
  if args.every_kernel:
    decode_matvec.KERNEL_MIN_SIZE.clear()
  failed = False
  try:
    for dtype in args.dtype:
      policy = check_policy(dtype)
      for batch in args.batch:
        record = {"check": "decode_kernel", "dtype": dtype, "batch": batch,
                  "new_tokens": args.new_tokens, "every_kernel": args.every_kernel,
                  **check(policy, batch, args.new_tokens),
                  "tolerance": TOLERANCE[dtype], "min_equal": MIN_EQUAL[dtype],
                  "device": str(jax.devices()[0].device_kind)}
        record["ok"] = (record["max_logprob_gap"] <= TOLERANCE[dtype]
                        and record["equal_tokens"] >= MIN_EQUAL[dtype])
        failed |= not record["ok"]
        common.emit(record, args.out)
  finally:
    decode_matvec.KERNEL_MIN_SIZE.clear()
    decode_matvec.KERNEL_MIN_SIZE.update(saved)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
