"""The fused log-probs (ops.fused_*logprobs), the decoder's "hidden" head and unrolled layers.

References: a float64 numpy log-softmax for values, and autodiff through the plain float32 logits
path (`ops.token_logprobs` on explicit logits) for gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlthink import ops
from rlthink.models import decoder
from rlthink.models.presets import get_preset


def _inputs(seed, b=3, t=37, e=16, v=50, dtype=jnp.float32):
  rng = np.random.default_rng(seed)  # fresh random inputs per case, never zeros
  hidden = jnp.asarray(rng.standard_normal((b, t, e)), dtype)
  unembedding = jnp.asarray(rng.standard_normal((v, e)) * 0.5, jnp.float32)
  tokens = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
  weights = jnp.asarray(rng.standard_normal((b, t)), jnp.float32)
  return hidden, unembedding, tokens, weights


def _numpy_logprobs(hidden, unembedding, tokens):
  logits = np.asarray(hidden, np.float64) @ np.asarray(unembedding, np.float64).T
  logits -= logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return np.take_along_axis(logp, np.asarray(tokens)[..., None], -1)[..., 0]


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("chunk,save_probs", [(8, False), (8, True), (5, None), (64, False)])
def test_fused_logprobs_match_float64_values_and_plain_gradients(chunk, save_probs):
  # chunk 8 and 5 do not divide T = 37 (padding path); 64 > T is one chunk.
  hidden, unembedding, tokens, weights = _inputs(chunk)
  logp = ops.fused_token_logprobs(hidden, unembedding, tokens, chunk, save_probs)
  assert logp.shape == tokens.shape and logp.dtype == jnp.float32
  np.testing.assert_allclose(logp, _numpy_logprobs(hidden, unembedding, tokens), atol=2e-5)

  def fused(h, w):
    return jnp.sum(weights * ops.fused_token_logprobs(h, w, tokens, chunk, save_probs))

  def plain(h, w):
    logits = jnp.einsum("bte,ve->btv", h, w, precision="highest")
    return jnp.sum(weights * ops.token_logprobs(logits, tokens))

  got = jax.grad(fused, argnums=(0, 1))(hidden, unembedding)
  want = jax.grad(plain, argnums=(0, 1))(hidden, unembedding)
  for g, w in zip(got, want):
    assert g.shape == w.shape and g.dtype == w.dtype
    assert _rel(g, w) < 1e-5


def test_fused_logprobs_in_bf16_keep_bf16_gradient_accuracy():
  hidden, unembedding, tokens, weights = _inputs(7, dtype=jnp.bfloat16)
  f = lambda h, w: jnp.sum(weights * ops.fused_token_logprobs(h, w, tokens, 8))
  dh, dw = jax.grad(f, argnums=(0, 1))(hidden, unembedding)
  assert dh.dtype == jnp.bfloat16 and dw.dtype == jnp.float32  # dw in the unembedding's dtype

  def reference(h, w):  # float32 math on the same bf16-rounded operands
    logits = jnp.einsum("bte,ve->btv", h.astype(jnp.float32),
                        w.astype(jnp.bfloat16).astype(jnp.float32), precision="highest")
    return jnp.sum(weights * ops.token_logprobs(logits, tokens))

  rdh, rdw = jax.grad(reference, argnums=(0, 1))(hidden, unembedding)
  assert _rel(dh, rdh) < 1e-2 and _rel(dw, rdw) < 1e-2


def test_fused_logprobs_reject_mismatched_shapes():
  hidden, unembedding, tokens, _ = _inputs(1)
  with pytest.raises(ValueError, match="tokens"):
    ops.fused_token_logprobs(hidden, unembedding, tokens[:, :-1])
  with pytest.raises(ValueError, match=r"\[V, E\]"):
    ops.fused_token_logprobs(hidden, unembedding.T, tokens)


def test_default_save_probs_follows_the_softmax_size():
  assert ops.default_save_probs(8, 1024, 151936, jnp.bfloat16)  # 2.5 GB
  assert not ops.default_save_probs(64, 2048, 151936, jnp.bfloat16)  # 40 GB


@pytest.mark.parametrize("tie", [True, False])
def test_hidden_head_and_unembedding_give_the_logits_heads_next_token_logprobs(tie):
  config = get_preset("tiny", num_layers=2, tie_embeddings=tie)
  params = decoder.init_params(config, jax.random.key(3))
  tokens = jax.random.randint(jax.random.key(4), (2, 12), 0, config.vocab_size)
  out, _ = decoder.forward(config, params, tokens, heads=("logits", "hidden"))
  assert out["hidden"].shape == (2, 12, config.hidden_size)
  want = ops.next_token_logprobs(out["logits"], tokens)
  got = ops.fused_next_token_logprobs(out["hidden"], decoder.unembedding(config, params), tokens,
                                      chunk_size=4)
  assert got.shape == (2, 11)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_unrolled_layers_have_the_same_params_logits_and_gradients():
  rolled = get_preset("tiny", num_layers=3)
  params = decoder.init_params(rolled, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, rolled.vocab_size)

  def loss(config, p):
    out, _ = decoder.forward(config, p, tokens)
    return -jnp.mean(ops.next_token_logprobs(out["logits"], tokens))

  want_loss, want_grads = jax.value_and_grad(lambda p: loss(rolled, p))(params)
  for unroll in (0, 2):
    config = rolled.replace(scan_unroll=unroll)
    same = decoder.init_params(config, jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, same, params)
    got_loss, got_grads = jax.value_and_grad(lambda p: loss(config, p))(params)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 got_grads, want_grads)


def test_logits_head_backward_runs_in_the_compute_dtype():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(1), (8, 30), jnp.bfloat16)
  g = jax.random.normal(jax.random.key(2), (2, 5, 30), jnp.float32)
  logits, vjp = jax.vjp(decoder.project_logits, x, w)
  assert logits.dtype == jnp.float32
  dx, dw = vjp(g)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
  x32, w32, g16 = x.astype(jnp.float32), w.astype(jnp.float32), g.astype(jnp.bfloat16)
  np.testing.assert_allclose(logits, jnp.einsum("bte,ev->btv", x32, w32, precision="highest"),
                             rtol=1e-5, atol=1e-5)
  want_dx = jnp.einsum("btv,ev->bte", g16.astype(jnp.float32), w32, precision="highest")
  assert _rel(dx, want_dx) < 1e-2


def _numpy_entropy(hidden, unembedding):
  logits = np.asarray(hidden, np.float64) @ np.asarray(unembedding, np.float64).T
  logits -= logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -(np.exp(logp) * logp).sum(-1)


@pytest.mark.parametrize("chunk", [8, 5, 64])
def test_chunked_logprobs_and_entropy_match_float64_values_and_plain_gradients(chunk):
  hidden, unembedding, tokens, weights = _inputs(chunk + 100)
  logp, ent = ops.chunked_token_logprobs(hidden, unembedding, tokens, chunk)
  np.testing.assert_allclose(logp, _numpy_logprobs(hidden, unembedding, tokens), atol=1e-5)
  np.testing.assert_allclose(ent, _numpy_entropy(hidden, unembedding), atol=1e-5)
  only_logp, none = ops.chunked_token_logprobs(hidden, unembedding, tokens, chunk,
                                               with_entropy=False)
  assert none is None
  np.testing.assert_array_equal(only_logp, logp)

  def chunked(h, w):
    lp, en = ops.chunked_token_logprobs(h, w, tokens, chunk)
    return jnp.sum(weights * lp) + 0.3 * jnp.sum(weights * en)

  def plain(h, w):
    logits = jnp.einsum("bte,ve->btv", h, w)
    return jnp.sum(weights * ops.token_logprobs(logits, tokens)) + 0.3 * jnp.sum(
        weights * ops.entropy(logits))

  got = jax.grad(chunked, argnums=(0, 1))(hidden, unembedding)
  want = jax.grad(plain, argnums=(0, 1))(hidden, unembedding)
  for g, w in zip(got, want):
    assert _rel(g, w) < 1e-5


def test_chunked_next_token_frame_and_bad_shapes():
  hidden, unembedding, tokens, _ = _inputs(3)
  logp, ent = ops.chunked_next_token_logprobs(hidden, unembedding, tokens, 8)
  assert logp.shape == ent.shape == (3, 36)
  np.testing.assert_allclose(logp, _numpy_logprobs(hidden[:, :-1], unembedding, tokens[:, 1:]),
                             atol=1e-5)
  with pytest.raises(ValueError, match="tokens"):
    ops.chunked_token_logprobs(hidden, unembedding, tokens[:, :5])
  with pytest.raises(ValueError, match="unembedding"):
    ops.chunked_token_logprobs(hidden, unembedding[:, :3], tokens)
