"""Greedy decoding equals transformers' greedy `generate`, token for token, on ragged batches.

Tiny random Llama and Qwen2 models are written with transformers' save_pretrained and read back
with `rlthink.load_pretrained`. The prompts have different lengths (left padding in both), and the
stop token is chosen among the tokens greedy decoding actually produces, so some rows stop early
while others run to max_new_tokens.
"""

import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink

MAX_NEW = 12
LENGTHS = (7, 1, 12, 4, 9)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_matches_transformers_generate(arch, tmp_path):
  model = sf.save_hf_model(arch, str(tmp_path / arch))
  policy = rlthink.load_pretrained(str(tmp_path / arch))
  prompts = sf.ragged_prompts(sf.HF_TINY["vocab_size"], LENGTHS, seed=4)

  free = sf.hf_greedy(model, prompts, MAX_NEW, eos=None)
  ro = rlthink.sample(policy, prompts, max_new_tokens=MAX_NEW, temperature=0.0, stop_tokens=())
  assert [ro.completion(r) for r in range(len(prompts))] == free
  assert ro.finish_reason == ["length"] * len(prompts)

  # A stop token that greedy decoding emits in the middle of row 0: that row (and any other that
  # emits it) stops there, the rest run on; transformers must agree on every row.
  eos = free[0][MAX_NEW // 3]
  stopped = sf.hf_greedy(model, prompts, MAX_NEW, eos=eos)
  ro = rlthink.sample(policy, prompts, max_new_tokens=MAX_NEW, temperature=0.0, stop_tokens=[eos])
  assert [ro.completion(r) for r in range(len(prompts))] == stopped
  assert ro.finish_reason == ["stop" if s[-1] == eos else "length" for s in stopped]
  assert ro.finish_reason.count("length") >= 1 and ro.finish_reason[0] == "stop"
  np.testing.assert_array_equal(ro.lengths, [len(s) for s in stopped])
  assert int(ro.decode_steps) == max(len(s) for s in stopped)
  # After its stop token a row holds only padding, masked out.
  assert (ro.completion_tokens[~ro.completion_mask] == 0).all()
