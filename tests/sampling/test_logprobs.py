"""The sampler's log-probs equal those of one full forward pass over the finished sequences.

`Rollouts.tokens` / `Rollouts.mask` go through `Policy.logits` in one pass (no cache); the log-prob
of each completion token there must match what the decode loop recorded: under the policy at
temperature 1 (`logprobs`) and under the processed distribution it sampled from
(`sampling_logprobs`). Rows stop at different steps, so padding after a stop is covered too.
"""

import numpy as np
import sampling_fixtures as sf

import rlthink

PROMPT_LENGTHS = (5, 17, 30, 2)
STOP = tuple(range(100, 140))  # 40 of 512 ids: rows stop at scattered steps


def _rollouts(dtype, **options):
  policy = sf.tiny_policy(dtype)
  prompts = sf.ragged_prompts(policy.config.vocab_size, PROMPT_LENGTHS, seed=2)
  return policy, rlthink.sample(policy, prompts, max_new_tokens=40, num_samples=2, seed=5,
                                stop_tokens=STOP, **options)


def test_logprobs_match_one_full_forward_in_float32():
  temperature, top_k = 0.8, 50
  policy, ro = _rollouts("float32", temperature=temperature, top_k=top_k)
  mask = ro.completion_mask
  assert 0 < ro.finish_reason.count("stop") < ro.num_rows  # some rows stopped early
  assert ro.lengths.min() < ro.lengths.max()

  ref = sf.full_forward_logprobs(policy, ro)
  assert np.abs(ref - ro.logprobs)[mask].max() <= 1e-4
  assert (ro.logprobs[~mask] == 0).all() and (ro.sampling_logprobs[~mask] == 0).all()

  # Under the sampling distribution: temperature then top-k on the same full-forward logits.
  scaled = sf.full_forward_logits(policy, ro).astype(np.float64) / temperature
  allowed = sf.allowed_top_k(scaled, top_k)
  assert allowed[np.arange(ro.num_rows)[:, None], np.arange(mask.shape[1]),
                 ro.completion_tokens][mask].all()
  filtered = np.where(allowed, scaled, -np.inf)
  top = filtered.max(-1, keepdims=True)
  log_q = filtered - top - np.log(np.exp(filtered - top).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_q, ro.completion_tokens[..., None], -1)[..., 0]
  assert np.abs(picked - ro.sampling_logprobs)[mask].max() <= 1e-4


def test_bfloat16_logprob_gap_is_small():
  # The documented bf16 gap (rlthink/sampling/__init__.py): the decode and the full forward round
  # differently; on the tiny preset about 5e-3 nats per token at most, 1.2e-3 on average.
  policy, ro = _rollouts("bfloat16", temperature=1.0)
  gap = np.abs(sf.full_forward_logprobs(policy, ro) - ro.logprobs)[ro.completion_mask]
  assert gap.max() <= 2e-2, gap.max()
  assert gap.mean() <= 5e-3, gap.mean()
