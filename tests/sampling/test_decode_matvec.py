"""The Pallas matvec kernels of one-row decode steps (run by Pallas' interpreter on CPU): equal to
a float64 numpy reference (residual add, RMSNorm, SiLU-multiply fused in), rounding like the
decoder's XLA ops in bfloat16, and the sampler at batch 1 with them equal to the sampler with
XLA's matmuls, on one device and on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink import sharding
from rlthink.models import decode_matvec as dm
from rlthink.models import decoder


def _case(rows, k, n, silu, norm, add, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(rows, k)).astype(dtype)
  w = (rng.normal(size=(2, n, k) if silu else (n, k)) / np.sqrt(k)).astype(dtype)
  scale = rng.normal(1.0, 0.3, size=k).astype(np.float32) if norm else None
  addend = rng.normal(size=(rows, k)).astype(dtype) if add else None
  return x, w, scale, addend


def _run(x, w, scale, addend, silu, **kw):
  arr = lambda a: None if a is None else jnp.asarray(a)
  return dm.matvec(arr(x), arr(w), norm_scale=arr(scale), add=arr(addend), silu_mul=silu,
                   eps=1e-5, **kw)


# (rows, K, N, silu_mul, norm, add): the decoder's q/k/v (norm + add) and gate/up (norm + add +
# SiLU) forms, a plain matmul with a long K (several BLOCK_K steps), 2..8 rows.
CASES = [(1, 256, 64, False, True, True), (1, 128, 96, True, True, True),
         (1, 512, 32, False, False, False), (2, 256, 64, True, False, False),
         (4, 128, 48, False, True, False), (8, 64, 16, True, True, True)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:3])) + "".join(
    f"_{name}" for name, on in zip(("silu", "norm", "add"), c[3:]) if on))
def test_kernel_matches_float64_reference(case):
  rows, k, n, silu, norm, add = case
  x, w, scale, addend = _case(*case)
  got = _run(x, w, scale, addend, silu)
  want = dm.reference(x, w, scale, 1e-5, silu, addend)
  if add:
    got, got_sum = got
    want, want_sum = want
    np.testing.assert_allclose(np.asarray(got_sum), want_sum, rtol=1e-6, atol=1e-6)
  assert got.shape == (rows, n) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_tilings_give_the_same_result():
  x, w, scale, addend = _case(2, 512, 64, True, True, True, seed=3)
  outs = [np.asarray(_run(x, w, scale, addend, True, block_n=bn, block_k=bk, num_warps=nw)[0])
          for bn, bk, nw in ((4, 64, 4), (16, 256, 8), (64, 512, 2))]
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-6)


def test_bfloat16_rounds_as_the_decoder_ops():
  """In bfloat16 the residual sum is bit-equal to XLA's add and the outputs within one rounding
  of `matvec_xla` (the decoder modules' computation): the kernel rounds the sum, the normed input
  and each matmul result where they do."""
  x, w, scale, addend = _case(1, 256, 128, True, True, True, seed=4)
  x, w, addend = (jnp.asarray(a, jnp.bfloat16) for a in (x, w, addend))
  scale = jnp.asarray(scale)
  (got, got_sum) = dm.matvec(x, w, norm_scale=scale, add=addend, silu_mul=True)
  (want, want_sum) = dm.matvec_xla(x, w, norm_scale=scale, add=addend, silu_mul=True)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got_sum, np.float32), np.asarray(want_sum, np.float32))
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  np.testing.assert_allclose(got, want, rtol=2 ** -7, atol=1e-3)
  # ... and far closer to the XLA form than the float64 reference of unrounded math is to it.
  exact = dm.reference(np.asarray(x, np.float32), np.asarray(w, np.float32), np.asarray(scale),
                       1e-6, True, np.asarray(addend, np.float32))[0]
  assert np.abs(got - want).mean() < np.abs(exact - want).mean()


def test_on_a_mesh_rows_split_over_the_batch_axes():
  mesh = sharding.make_mesh((4, 2, 1), jax.devices()[:8])
  x, w, scale, addend = _case(8, 128, 64, False, True, True, seed=5)
  put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh, a.shape))
  got, got_sum = dm.matvec(put(x), jnp.asarray(w), norm_scale=jnp.asarray(scale),
                           add=put(addend), mesh=mesh)
  want, want_sum = dm.reference(x, w, scale, 1e-5, False, addend)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(np.asarray(got_sum), want_sum, rtol=1e-6, atol=1e-6)


def test_input_errors():
  x, w, scale, addend = _case(1, 64, 32, False, True, True)
  with pytest.raises(ValueError, match="x \\[R, K\\] and w"):
    _run(x, w[:, :32], None, None, False)
  with pytest.raises(ValueError, match="2, N, K"):
    _run(x, w, None, None, True)
  with pytest.raises(ValueError, match="add must be"):
    _run(x, w, None, addend[:, :32], False)
  with pytest.raises(ValueError, match="norm_scale must be"):
    _run(x, w, scale[:32], None, False)
  with pytest.raises(ValueError, match="power of two"):
    _run(np.ones((3, 64), np.float32), w, None, None, False)
  with pytest.raises(ValueError, match="multiples of 16"):
    _run(x, np.ones((24, 64), np.float32), None, None, False)
  with pytest.raises(ValueError, match="must divide"):
    _run(x, w, None, None, False, block_n=64)


def _one_prompt(policy, attention, mesh=None, **kw):
  prompts = sf.ragged_prompts(policy.config.vocab_size, (9,), seed=11)
  return rlthink.sample(policy, prompts, max_new_tokens=12, seed=2, stop_tokens=(),
                        temperature=1.0, decode_attention=attention, **kw)


@pytest.fixture
def kernel_calls(monkeypatch):
  """The weight shapes of every traced matvec kernel call."""
  calls = []
  real = dm.matvec

  def spy(x, w, **kw):
    calls.append(w.shape)
    return real(x, w, **kw)
  monkeypatch.setattr(dm, "matvec", spy)
  return calls


@pytest.mark.parametrize("model", ["tiny", "qwen2_bias"])
def test_sampler_at_batch_1_runs_the_kernels_and_equals_xla(model, kernel_calls):
  policy = sf.tiny_policy() if model == "tiny" else sf.qwen2_bias_policy()
  cfg = policy.config
  ours = _one_prompt(policy, "pallas")
  # Two kernels per layer (q/k/v and gate/up), traced once per layer.
  e, m = cfg.hidden_size, cfg.intermediate_size
  qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
  assert kernel_calls == [(qkv, e), (2, m, e)] * cfg.num_layers
  xla = _one_prompt(policy, "xla")
  np.testing.assert_array_equal(ours.completion_tokens, xla.completion_tokens)
  np.testing.assert_allclose(ours.logprobs, xla.logprobs, atol=1e-5)
  np.testing.assert_allclose(ours.logprobs, sf.full_forward_logprobs(policy, ours) *
                             ours.completion_mask, atol=1e-4)


def test_every_layer_matmul_as_a_kernel_or_none_gives_the_same_rollouts(monkeypatch,
                                                                       kernel_calls):
  """Changing LAYER_KERNELS / KERNEL_MIN_SIZE between calls takes effect (the program is traced
  anew, not reused from the cache), and every choice samples the XLA path's rollout."""
  policy = sf.tiny_policy()
  cfg = policy.config
  ref = _one_prompt(policy, "xla")
  monkeypatch.setattr(dm, "KERNEL_MIN_SIZE", {})
  for kernels, per_layer in (({}, 0), (dict(dm.LAYER_KERNELS, o=(8, 128, 8), down=(4, 256, 8)),
                                       4)):
    monkeypatch.setattr(dm, "LAYER_KERNELS", kernels)
    kernel_calls.clear()
    ours = _one_prompt(policy, "pallas")
    assert len(kernel_calls) == per_layer * cfg.num_layers
    np.testing.assert_array_equal(ours.completion_tokens, ref.completion_tokens)
    np.testing.assert_allclose(ours.logprobs, ref.logprobs, atol=1e-5)


def test_down_is_a_kernel_from_its_minimum_size(monkeypatch, kernel_calls):
  """KERNEL_MIN_SIZE["down"]: a down weight of at least that many elements runs as a kernel,
  a smaller one as XLA ops (the committed 8M: qwen2.5-1.5b's [1536, 8960] yes, 0.5b's no)."""
  assert 896 * 4864 < dm.KERNEL_MIN_SIZE["down"] <= 1536 * 8960
  policy = sf.tiny_policy()
  cfg = policy.config
  down = (cfg.hidden_size, cfg.intermediate_size)
  runs = []
  for size in (down[0] * down[1], down[0] * down[1] + 1):
    monkeypatch.setattr(dm, "KERNEL_MIN_SIZE", {"down": size})
    kernel_calls.clear()
    runs.append(_one_prompt(policy, "pallas"))
    assert kernel_calls.count(down) == (cfg.num_layers if size == down[0] * down[1] else 0)
    assert len(kernel_calls) == (3 if kernel_calls.count(down) else 2) * cfg.num_layers
  np.testing.assert_array_equal(runs[0].completion_tokens, runs[1].completion_tokens)
  np.testing.assert_allclose(runs[0].logprobs, runs[1].logprobs, atol=1e-5)


def test_sampler_on_a_mesh_with_one_row_per_device(kernel_calls):
  """One prompt on a (4, 2, 1) mesh: 8 rows (the bucket), one per device: the kernels run per
  shard, and the rollout equals the single-device XLA one."""
  base = sf.tiny_policy()
  mesh = sharding.make_mesh((4, 2, 1), jax.devices()[:8])
  params = jax.device_put(base.params, decoder.param_shardings(base.config, mesh))
  ours = _one_prompt(base.replace(params=params, mesh=mesh), "pallas")
  assert kernel_calls
  ref = _one_prompt(base, "xla")
  np.testing.assert_array_equal(ours.completion_tokens, ref.completion_tokens)
  np.testing.assert_allclose(ours.logprobs, ref.logprobs, atol=1e-5)


def test_more_rows_than_max_rows_take_xla_matmuls(kernel_calls):
  policy = sf.tiny_policy()
  prompts = sf.ragged_prompts(policy.config.vocab_size, (5, 7), seed=1)
  rlthink.sample(policy, prompts, max_new_tokens=4, stop_tokens=(), decode_attention="pallas")
  assert dm.MAX_ROWS < 2 and kernel_calls == []
