"""GPU check of the compiled decode kernels (the tests run them in Pallas' interpreter).

Samples the same rollouts with `decode_attention="pallas"` (the attention kernel and, for a few
rows, the `decode_matvec` kernels) and `"xla"` on the real device, for a
Qwen2-style model with q/k/v biases (the kernel writes the cache: `write_kv`) at batch sizes that
take chunked and whole-row programs, and prints one JSON line per case: the share of equal
tokens and the largest log-prob gap before each row's first differing token. Exits 1 on a gap
above 1e-2 nats (float32) or 0.1 (bfloat16): a wrong kernel (a missed slot, a wrong rotation)
is far off; rounding differences (TF32 dots, bf16 ties) are not. Usage: `PYTHONPATH=. python3 docs/benchmarks/check_decode_kernel.py`.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rlthink


def _policy(dtype: str):
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


def main() -> int:
  failed = False
  for dtype in ("float32", "bfloat16"):
    policy = _policy(dtype)
    # 1 and 3 (padded to 4) rows: the decode_matvec kernels around chunked attention; 300:
    # XLA's matmuls around whole-row attention programs.
    for batch in (1, 3, 300):
      rng = np.random.default_rng(batch)
      prompts = [rng.integers(0, 512, int(n)).tolist() for n in rng.integers(1, 40, batch)]
      ours, xla = (rlthink.sample(policy, prompts, max_new_tokens=48, temperature=1.0, seed=3,
                                  stop_tokens=(), decode_attention=a) for a in ("pallas", "xla"))
      same = float(np.mean(ours.completion_tokens == xla.completion_tokens))
      # Compare log-probs only up to each row's first differing token.
      agree = np.cumprod(ours.completion_tokens == xla.completion_tokens, axis=1).astype(bool)
      gap = float(np.max(np.abs(ours.logprobs - xla.logprobs) * agree))
      record = {"check": "decode_kernel", "dtype": dtype, "batch": batch, "equal_tokens": same,
                "max_logprob_gap": gap, "device": str(jax.devices()[0])}
      print(json.dumps(record), flush=True)
      failed |= gap > (1e-2 if dtype == "float32" else 0.1)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
