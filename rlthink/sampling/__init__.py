"""The rollout engine: `sample(policy, prompts, ...) -> Rollouts`.

One jitted XLA program per (model, mesh, bucketed shapes, static options) does the whole rollout:
prefill once per prompt, share the prompt's KV cache across its `num_samples` samples, then a
`lax.while_loop` decode over a preallocated, donated cache that stops as soon as every row has
sampled a stop token. See `engine` for the program, `sampler` for the checks and shape buckets,
`processors` for temperature / top-k / top-p, `rollouts` for the output layout, `text` for strings.

    ro = rlthink.sample(policy, [[1, 5, 7], [1, 9]], max_new_tokens=64, temperature=0.7,
                        num_samples=4, seed=0)
    ro.tokens, ro.mask          # [N, P + C] prompt | completion, ready for the training forward
    ro.logprobs                 # [N, C] log pi(token) at temperature 1 (0 where masked)
    ro.sampling_logprobs        # [N, C] log-prob under the processed (sampled-from) distribution
    ro.lengths, ro.finish_reason

Numerics: `ro.logprobs` equal the log-probs of one full forward over `ro.tokens` with `ro.mask`
(within 1e-5 in float32 on CPU; the tests require 1e-4). In bfloat16 the cached decode and the full
forward round differently (the cache holds bf16 keys/values computed one token at a time); on the
tiny preset the gap is about 1e-2 nats per token (max abs), see tests/sampling/test_logprobs.py.
"""

from rlthink.sampling.processors import draw, process_logits
from rlthink.sampling.rollouts import Rollouts
from rlthink.sampling.sampler import batch_bucket, prompt_bucket, sample

__all__ = ["Rollouts", "SampleConfig", "batch_bucket", "decode_completions", "draw",
           "process_logits", "prompt_bucket", "sample", "sample_text"]

# Text helpers and the gin-bound `SampleConfig` load on first use: gin is not on every accelerator
# image, and the benchmark path (`rlthink.bench.sample`) never needs it.
_LAZY = {"SampleConfig": "rlthink.sampling.config", "sample_text": "rlthink.sampling.text",
         "decode_completions": "rlthink.sampling.text"}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'rlthink.sampling' has no attribute {name!r}")
  import importlib
  return getattr(importlib.import_module(_LAZY[name]), name)
