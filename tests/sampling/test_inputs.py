"""The edges of `rlthink.sample`: bad requests fail before compiling, shapes are bucketed so
repeated calls reuse the compiled program, and rows are laid out prompt by prompt."""

import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink.sampling import engine, sampler


@pytest.mark.parametrize("prompts,options,message", [
    ([[1, 2, 3], [7] * 1000], dict(max_new_tokens=100), "prompt 1 has 1000 tokens"),
    ([[1, 2], []], dict(max_new_tokens=4), "prompt 1 is empty"),
    ([], dict(max_new_tokens=4), "prompts is empty"),
    ([[1, 2]], dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
    ([[1, 2]], dict(max_new_tokens=-3), "max_new_tokens must be a positive int"),
    ([[1, 512]], dict(max_new_tokens=4), "token id 512 outside the vocabulary [0, 512)"),
    ([[5], [-1, 3]], dict(max_new_tokens=4), "prompt 1 has token id -1 outside"),
    ([[1.5, 2.0]], dict(max_new_tokens=4), "integer token ids"),
    (["hello"], dict(max_new_tokens=4), "string prompts need a tokenizer"),
    ([[1, 2]], dict(max_new_tokens=4, temperature=-1.0), "temperature must be"),
    ([[1, 2]], dict(max_new_tokens=4, top_p=0.0), "top_p must be"),
    ([[1, 2]], dict(max_new_tokens=4, top_k=0), "top_k must be"),
    ([[1, 2]], dict(max_new_tokens=4, num_samples=0), "num_samples must be"),
    ([[1, 2]], dict(max_new_tokens=4, stop_tokens=[600]), "stop token 600"),
    ([[1, 2]], dict(max_new_tokens=4, stop_tokens=2), "stop_tokens must be a list"),
])
def test_bad_requests_fail_before_compiling(prompts, options, message):
  policy = sf.tiny_policy()
  compiled = engine.generate._cache_size()
  with pytest.raises(ValueError) as info:
    rlthink.sample(policy, prompts, **options)
  assert message in str(info.value)
  assert engine.generate._cache_size() == compiled


def test_buckets():
  assert sampler.prompt_bucket(3, 8, 1024) == 16
  assert sampler.prompt_bucket(17, 8, 1024) == 32
  assert sampler.prompt_bucket(600, 8, 1024) == 1016  # cut so that P + C fits max_seq_len
  assert sampler.batch_bucket(3, None) == 4 and sampler.batch_bucket(64, None) == 64


def test_same_buckets_reuse_the_compiled_program_and_rows_follow_prompts():
  policy = sf.tiny_policy()
  options = dict(max_new_tokens=8, num_samples=3, stop_tokens=())
  first = rlthink.sample(policy, sf.ragged_prompts(512, (3, 9, 14), seed=1), seed=1,
                         temperature=0.7, **options)
  compiled = engine.generate._cache_size()
  # Other prompt lengths (same bucket: 16), 4 prompts (same bucket: 4), another seed and
  # temperature: no new compilation.
  prompts = sf.ragged_prompts(512, (12, 1, 5, 16), seed=2)
  second = rlthink.sample(policy, prompts, seed=2, temperature=1.3, **options)
  assert engine.generate._cache_size() == compiled
  assert first.num_rows == 9 and second.num_rows == 12

  # Row i * num_samples + j is sample j of prompt i; its prompt is stored left-padded.
  np.testing.assert_array_equal(second.prompt_index, np.repeat(np.arange(4), 3))
  for row in range(second.num_rows):
    assert second.prompt(row) == prompts[row // 3]
    assert second.prompt_tokens[row, -1] == prompts[row // 3][-1]
  assert second.tokens.shape == (12, 16 + 8) and second.mask.sum(1).tolist() == [
      len(prompts[r // 3]) + 8 for r in range(12)]
  # Samples of one prompt share its prefill but draw independently.
  assert len({tuple(second.completion(r)) for r in range(3)}) == 3
  assert second.finish_reason == ["length"] * 12 and (second.lengths == 8).all()


def test_sample_is_the_public_entry_point():
  assert rlthink.sample is sampler.sample


def test_scanned_and_unrolled_layers_sample_the_same_rollouts():
  policy = sf.tiny_policy()
  prompts = sf.ragged_prompts(512, (4, 13), seed=3)
  options = dict(max_new_tokens=6, temperature=0.9, num_samples=2, seed=4, stop_tokens=())
  unrolled = rlthink.sample(policy, prompts, **options)
  scanned = rlthink.sample(policy, prompts, unroll_layers=False, **options)
  np.testing.assert_array_equal(unrolled.completion_tokens, scanned.completion_tokens)
  np.testing.assert_allclose(unrolled.logprobs, scanned.logprobs, atol=1e-5)


def test_many_rows_per_gpu_take_the_cublas_program(monkeypatch):
  """On GPU, >= CUBLAS_MIN_ROWS rows per device compile the program with cuBLAS matmuls; fewer
  rows (and every other backend) the default. Both programs give the same rollouts."""
  assert engine.program_for(10_000) is engine.generate  # this CPU
  monkeypatch.setattr(engine.jax, "default_backend", lambda: "gpu")
  assert engine.program_for(engine.CUBLAS_MIN_ROWS) is engine.generate_cublas
  assert engine.program_for(engine.CUBLAS_MIN_ROWS - 1) is engine.generate
  monkeypatch.undo()
  policy = sf.tiny_policy()
  prompts = sf.ragged_prompts(512, (4, 9), seed=3)
  options = dict(max_new_tokens=6, num_samples=2, stop_tokens=(), seed=4)
  default = rlthink.sample(policy, prompts, **options)
  monkeypatch.setattr(engine, "program_for", lambda rows: engine.generate_cublas)
  cublas = rlthink.sample(policy, prompts, **options)
  np.testing.assert_array_equal(cublas.completion_tokens, default.completion_tokens)
  np.testing.assert_allclose(cublas.logprobs, default.logprobs, atol=1e-6)
