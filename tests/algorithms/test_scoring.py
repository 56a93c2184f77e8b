"""Scoring rollouts in the token frame: the rollout's training arrays line up with a training
forward's next-token log-probs, and chunked scoring equals one forward."""

import jax
import jax.numpy as jnp
import numpy as np

from rlthink import init_policy, ops, sample
from rlthink.algorithms import scoring


def test_train_arrays_align_with_next_token_logprobs():
  policy = init_policy("tiny", seed=0, num_layers=2)
  prompts = [[1, 5, 7, 9], [1, 4], [1, 8, 8, 8, 8, 8, 2]]
  ro = sample(policy, prompts, max_new_tokens=6, num_samples=2, seed=3, temperature=1.0)
  batch = ro.train_arrays()
  n, t = batch["tokens"].shape
  assert batch["completion_mask"].shape == batch["old_logprobs"].shape == (n, t - 1)
  # the mask covers exactly the sampled tokens
  np.testing.assert_array_equal(batch["completion_mask"].sum(1), ro.lengths)
  scored = scoring.score_in_chunks(policy.config, policy.params, batch["tokens"],
                                   batch["attention_mask"], chunk_size=4)
  drift = scoring.logprob_drift(scored["logprobs"], batch["old_logprobs"],
                                batch["completion_mask"])
  assert drift["logprob_drift_max"] < 1e-4
  # and the gathered tokens are the sampled ones: completion token j of row r at column P-1+j
  p = ro.prompt_tokens.shape[1]
  logits = policy.logits(batch["tokens"], batch["attention_mask"])
  direct = ops.token_logprobs(logits[:, p - 1:-1], jnp.asarray(ro.completion_tokens))
  np.testing.assert_allclose(np.asarray(direct) * ro.completion_mask,
                             scored["logprobs"][:, p - 1:] * ro.completion_mask, atol=1e-5)


def test_score_in_chunks_values_match_one_forward():
  policy = init_policy("tiny", seed=0, num_layers=2)
  from rlthink.models import decoder
  params = decoder.init_params(policy.config, jax.random.key(0), heads=("logits", "value"))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 100, size=(5, 9)).astype(np.int32)
  mask = np.ones((5, 9), bool)
  mask[2, :3] = False
  chunked = scoring.score_in_chunks(policy.config, params, tokens, mask, ("logits", "value"), 2)
  whole = scoring.score_tokens(policy.config, params, jnp.asarray(tokens), jnp.asarray(mask),
                               ("logits", "value"))
  for k in ("logprobs", "values"):
    assert chunked[k].shape == (5, 8)
    np.testing.assert_allclose(chunked[k], np.asarray(whole[k]), atol=1e-5)
