"""The sampled next-token distribution: temperature, top-k and top-p against numpy references.

Thousands of samples of one prompt's first completion token (num_samples rows, max_new_tokens=1)
are compared with the distribution computed from one independent full forward pass. Each
chi-square test is also run against a plausible wrong answer, to show it has the power to fail.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink.sampling import engine, processors

DRAWS = 4000
PROMPT = sf.ragged_prompts(32, [5], seed=1)[0]


def _draws(**options):
  policy = sf.peaked_policy()
  ro = rlthink.sample(policy, [PROMPT], max_new_tokens=1, num_samples=DRAWS, seed=11,
                      stop_tokens=(), **options)
  assert ro.completion_tokens.shape == (DRAWS, 1) and ro.completion_mask.all()
  return ro.completion_tokens[:, 0], ro


def _reference_logits() -> np.ndarray:
  return np.asarray(sf.peaked_policy().logits([PROMPT]))[0, -1].astype(np.float64)


def _assert_fits(tokens, probs, wrong_probs):
  counts = np.bincount(tokens, minlength=probs.shape[0])
  stat, df = sf.chi_square(counts, probs)
  assert stat < sf.chi_square_critical(df), (stat, df)
  wrong, wrong_df = sf.chi_square(counts, wrong_probs)
  assert wrong > sf.chi_square_critical(wrong_df), "the test cannot tell the wrong distribution"


def test_temperature_matches_softmax_of_scaled_logits():
  logits = _reference_logits()
  compiled = engine.generate._cache_size()
  for temperature in (0.6, 1.7, 1.0):
    tokens, ro = _draws(temperature=temperature)
    if temperature == 1.7:
      # The temperature is an argument of the compiled program, not part of its cache key (only
      # temperature 1, where sampling needs no processing, has a program of its own).
      assert engine.generate._cache_size() <= compiled + 1
    probs = sf.softmax(logits / temperature)
    wrong_t = 1.0 if temperature != 1.0 else 1.3
    _assert_fits(tokens, probs, sf.softmax(logits / wrong_t))
    # Both log-probs of each draw: under the policy (T = 1) and under the sampled distribution.
    np.testing.assert_allclose(ro.logprobs[:, 0], np.log(sf.softmax(logits))[tokens], atol=1e-4)
    np.testing.assert_allclose(ro.sampling_logprobs[:, 0], np.log(probs)[tokens], atol=1e-4)


@pytest.mark.parametrize("option,value", [("top_k", 4), ("top_p", 0.7)])
def test_filters_only_emit_allowed_tokens_with_renormalized_probabilities(option, value):
  logits = _reference_logits()
  temperature = 0.9
  scaled = logits / temperature
  allowed = (sf.allowed_top_k(scaled, value) if option == "top_k"
             else sf.allowed_top_p(scaled, value))
  assert 1 < allowed.sum() < len(logits) // 2  # a filter that actually removes tokens
  tokens, ro = _draws(temperature=temperature, **{option: value})
  assert allowed[tokens].all(), sorted(set(tokens[~allowed[tokens]].tolist()))
  probs = np.where(allowed, sf.softmax(scaled), 0.0)
  probs /= probs.sum()
  _assert_fits(tokens, probs, sf.softmax(scaled))
  np.testing.assert_allclose(ro.sampling_logprobs[:, 0], np.log(probs[tokens]), atol=1e-4)
  np.testing.assert_allclose(ro.logprobs[:, 0], np.log(sf.softmax(logits))[tokens], atol=1e-4)


def test_greedy_is_argmax_with_zero_sampling_logprob():
  tokens, ro = _draws(temperature=0.0)
  logits = _reference_logits()
  assert (tokens == np.argmax(logits)).all()
  assert (ro.sampling_logprobs == 0).all()
  np.testing.assert_allclose(ro.logprobs[:, 0], np.log(sf.softmax(logits)[np.argmax(logits)]),
                             atol=1e-4)


def test_draw_matches_softmax_across_vocabulary_chunks():
  # 300 tokens = 3 chunks of 128 (the last one padded), a third of them impossible (-inf).
  rng = np.random.RandomState(0)
  logits = 2.0 * rng.randn(300)
  logits[rng.rand(300) < 0.33] = -np.inf
  logits[299] = 3.0  # mass in the padded last chunk too
  n = 20000
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(n))
  tokens = np.asarray(processors.draw(keys, jnp.tile(jnp.asarray(logits, jnp.float32), (n, 1))))
  assert np.isfinite(logits[tokens]).all()
  probs = sf.softmax(np.where(np.isfinite(logits), logits, -1e30))
  _assert_fits(tokens, probs, sf.softmax(np.where(np.isfinite(logits), logits / 1.2, -1e30)))
  # A certain token is always drawn, wherever it sits.
  sure = np.full((4, 300), -np.inf, np.float32)
  sure[np.arange(4), [0, 127, 128, 299]] = 0.0
  np.testing.assert_array_equal(processors.draw(keys[:4], jnp.asarray(sure)), [0, 127, 128, 299])


def test_draw_returns_the_log_probability_of_the_drawn_token():
  rng = np.random.RandomState(1)
  logits = (3.0 * rng.randn(64, 300)).astype(np.float32)
  logits[rng.rand(64, 300) < 0.2] = -np.inf
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(2), i))(jnp.arange(64))
  tokens, logprobs = processors.draw_with_logprob(keys, jnp.asarray(logits))
  np.testing.assert_array_equal(tokens, processors.draw(keys, jnp.asarray(logits)))
  x = logits.astype(np.float64)
  top = x.max(-1, keepdims=True)
  log_softmax = x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))
  expected = log_softmax[np.arange(64), np.asarray(tokens)]
  np.testing.assert_allclose(np.asarray(logprobs), expected, atol=1e-5)


def test_draw_kernel_pass_equals_the_xla_pass():
  """The GPU kernel's per-chunk (max, sum-exp) pass (run by Pallas' interpreter here) gives the
  float64 values, all -inf chunks included, over more chunks than one program takes; and the
  draw with it, sharded over a (2, 2, 2) mesh, equals the draw without it on one device."""
  rng = np.random.RandomState(3)
  chunks = processors.CHUNKS_PER_PROGRAM + 5
  x = (3.0 * rng.randn(4, chunks, 128)).astype(np.float32)
  x[1, 2] = -np.inf                       # a chunk with no allowed token
  x[2, chunks - 1, :100] = -np.inf         # part of the last program's last chunk
  m, s = processors._chunk_softmax_stats_kernel(jnp.asarray(x), interpret=True)
  top = x.max(axis=2)
  np.testing.assert_array_equal(np.asarray(m), top)
  expected = np.exp(x.astype(np.float64) - np.where(np.isfinite(top), top, 0)[..., None]).sum(2)
  np.testing.assert_allclose(np.asarray(s), expected, rtol=1e-5)
  assert np.asarray(s)[1, 2] == 0.0
  logits = jnp.asarray((2.0 * rng.randn(8, 5000)).astype(np.float32))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(4), i))(jnp.arange(8))
  mesh = rlthink.sharding.make_mesh((2, 2, 2), jax.devices()[:8])
  with_kernel = jax.jit(lambda k, x: processors.draw_with_logprob(k, x, mesh, kernel=True))
  tokens, logprobs = with_kernel(keys, logits)
  ref_tokens, ref_logprobs = processors.draw_with_logprob(keys, logits, kernel=False)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(logprobs, ref_logprobs, atol=1e-5)


def test_draw_kernel_on_a_tensor_mesh_moves_statistics_not_logits():
  """With the vocabulary split over `tensor` (whole 128-token chunks per device), each device
  makes the kernel's pass over its own logits: the compiled draw gathers per-chunk statistics,
  never a row of logits."""
  mesh = rlthink.sharding.make_mesh((1, 4, 2), jax.devices()[:8])
  n, v = 8, 4096
  spec = rlthink.sharding.logical_to_spec(("batch", "vocab"), (n, v), mesh)
  assert spec[1] == "tensor"
  logits = jax.device_put(jax.random.normal(jax.random.key(0), (n, v)),
                          jax.sharding.NamedSharding(mesh, spec))
  keys = jax.random.split(jax.random.key(1), n)
  draw = jax.jit(lambda k, x: processors.draw_with_logprob(k, x, mesh, kernel=True))
  hlo = draw.lower(keys, logits).compile().as_text()
  gathered = [int(np.prod([int(d) for d in m.group(1).split(",") if d]))
              for m in re.finditer(r"= f32\[([\d,]*)\]\S* all-gather\(", hlo)]
  assert gathered and max(gathered) <= (n // 4) * (v // 128)  # [rows, chunks] statistics only
  tokens, logprobs = draw(keys, logits)
  ref_tokens, ref_logprobs = processors.draw_with_logprob(keys, np.asarray(logits), kernel=False)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(logprobs, ref_logprobs, atol=1e-5)
