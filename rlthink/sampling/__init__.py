"""The rollout engine: `sample(policy, prompts, ...) -> Rollouts`.

One jitted XLA program per (model, mesh, bucketed shapes, static options) does the whole rollout:
prefill once per prompt, share the prompt's KV cache across its `num_samples` samples, then a
`lax.while_loop` decode over a preallocated, donated cache that stops as soon as every row has
sampled a stop token. By default the layers run unrolled from a per-call copy of the weights in
the compute dtype, each layer with its own weight and KV-cache buffers, so the loop never slices
a stacked array (`unroll_layers=False` keeps the scanned stack), its matmul weights stored input
axis minor. On GPU each decode step attends with a Pallas kernel that reads only each row's
filled cache slots and writes the step's keys and values into the cache itself
(`rlthink.models.decode_attention`; `decode_attention="xla"` for XLA's einsum over every slot),
and the draw's pass over the logits is a Pallas kernel too. Weights sharded over `fsdp` are gathered once per call, before the program, so
the loop runs data-parallel without per-step all-gathers. See `engine` for the program,
`sampler` for the checks and shape buckets, `processors` for temperature / top-k / top-p,
`rollouts` for the output layout, `text` for strings and `config` for the gin-bound options.

With more completions than `max_slots`, the continuous engine (`continuous`, laid out by `slots`)
decodes max_slots rows and gives each finished row the next request at once, so rows of very
different lengths do not wait for the longest; it returns the same completions as the static
engine. `sample_async` dispatches and returns, so the host can verify one batch while the
device samples the next.

    ro = rlthink.sample(policy, [[1, 5, 7], [1, 9]], max_new_tokens=64, temperature=0.7,
                        num_samples=4, seed=0)
    ro.tokens, ro.mask          # [N, P + C] prompt | completion, ready for the training forward
    ro.logprobs                 # [N, C] log pi(token) at temperature 1 (0 where masked)
    ro.sampling_logprobs        # [N, C] log-prob under the processed (sampled-from) distribution
    ro.lengths, ro.finish_reason

Numerics: `ro.logprobs` equal the log-probs of one full forward over `ro.tokens` with `ro.mask`
(within 1e-6 in float32 on CPU; the tests require 1e-4). In bfloat16 the decode and the full
forward round differently (different fusions, keys/values cached one token at a time): on the tiny
preset (random init, CPU) the gap is 4.6e-3 nats per token at most and 1.2e-3 on average, the
same size as the gap of either bf16 computation to float32 (5e-3 max, 1.3e-3 mean); see
tests/sampling/test_logprobs.py. Trainers that need exact ratios recompute them with the
training forward.
"""

from rlthink.sampling.config import SampleConfig
from rlthink.sampling.processors import draw, process_logits
from rlthink.sampling.rollouts import Rollouts
from rlthink.sampling.sampler import (PendingRollouts, batch_bucket, lower_sample, prompt_bucket,
                                      sample, sample_async)
from rlthink.sampling.slots import SlotOptions
from rlthink.sampling.text import decode_completions, sample_text

__all__ = ["PendingRollouts", "Rollouts", "SampleConfig", "SlotOptions", "batch_bucket",
           "decode_completions", "draw", "lower_sample", "process_logits", "prompt_bucket",
           "sample", "sample_async", "sample_text"]
