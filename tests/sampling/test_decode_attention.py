"""The Pallas decode-attention kernel (run by Pallas' interpreter on CPU): equal to a float64
numpy reference over each row's [start, length) slots, and the sampler with it equal to the
sampler with XLA's einsum attention, on one device and on a (2, 2, 2) mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink import sharding
from rlthink.models import decode_attention as da
from rlthink.models import attention, decoder


def _case(b, h, kv, s, d, seed, dtype=np.float32):
  rng = np.random.default_rng(seed)
  q, k, v = (rng.normal(size=shape).astype(dtype)
             for shape in ((b, h, d), (b, kv, s, d), (b, kv, s, d)))
  start = rng.integers(0, s // 2, size=b).astype(np.int32)
  length = np.array([rng.integers(lo + 1, s + 1) for lo in start], np.int32)
  length[0] = start[0] + 1  # a single attended slot
  return q, k, v, start, length


# (rows, query heads, kv heads, slots, head_dim): one KV group (MQA), GQA with 7 heads per group
# (padded to 16 rows), 16..128-slot chunks, one and many chunks per row.
SHAPES = [(3, 7, 1, 48, 16), (2, 4, 2, 64, 32), (5, 14, 2, 128, 64), (1, 8, 4, 384, 16)]


@pytest.mark.parametrize("whole_rows", [False, True], ids=["chunks", "whole_rows"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_numpy_reference(shape, whole_rows):
  """Chunks merged by log-sum-exp, or one program per (row, KV head) over all its slots (what
  large batches get) writing the output itself."""
  q, k, v, start, length = _case(*shape, seed=sum(shape))
  out = da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)),
                            chunk=shape[3] if whole_rows else None)
  assert out.dtype == jnp.float32 and out.shape == q.shape
  np.testing.assert_allclose(np.asarray(out), da.reference(q, k, v, start, length), atol=2e-6)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=lambda s: "x".join(map(str, s)))
def test_kernel_adds_the_query_bias_and_rotates_with_rope(shape):
  """Given RoPE tables and a query bias, the kernel attends with RoPE(q + bias) (the decoder's
  rotate-half convention), as the reference does in float64."""
  q, k, v, start, length = _case(*shape, seed=sum(shape) + 1)
  positions = (length - start + 3).astype(np.int32)
  inv_freq = attention.rope_inv_freq(rlthink.ModelConfig(head_dim=shape[4], rope_theta=500.0))
  cos, sin = (np.concatenate([t, t], -1) for t in map(np.asarray, attention.rope_tables(
      jnp.asarray(positions), inv_freq)))
  bias = np.random.default_rng(0).normal(size=q.shape[1:]).astype(np.float32)
  out = da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)),
                            rope=(jnp.asarray(cos), jnp.asarray(sin)), q_bias=jnp.asarray(bias),
                            chunk=shape[3] if shape[2] == 2 else None)
  expected = da.reference(q, k, v, start, length, (cos, sin), bias)
  np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)
  plain = da.reference(q, k, v, start, length)
  assert np.abs(expected - da.reference(q, k, v, start, length, q_bias=bias)).max() > 1e-2
  assert np.abs(expected - da.reference(q, k, v, start, length, (cos, sin))).max() > 1e-2
  assert np.abs(expected - plain).max() > 1e-2


def test_kernel_reads_only_the_query_rows_of_a_fused_projection():
  """q may hold more rows after its query heads (the decoder's fused q/k/v projection); with
  `heads` the kernel reads only those heads: the rest may hold anything."""
  q, k, v, start, length = _case(3, 14, 2, 64, 16, seed=4)
  extra = np.full((3, 4, 16), 1e4, np.float32)
  fused = np.concatenate([q, extra], axis=1)
  out = da.decode_attention(*map(jnp.asarray, (fused, k, v, start, length)), heads=14)
  assert out.shape == q.shape
  np.testing.assert_allclose(np.asarray(out), da.reference(q, k, v, start, length), atol=2e-6)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("whole_rows", [False, True], ids=["chunks", "whole_rows"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_writes_the_new_keys_and_values(shape, whole_rows, bias):
  """With write_kv, q is the fused projection (query heads, then this step's keys and values):
  the kernel stores the biased, rotated key and the biased value in slot length - 1 of every
  row's cache, changes no other slot, and attends to them (not to what the slot held)."""
  b, h, kv, s, d = shape
  rng = np.random.default_rng(sum(shape) + 2)
  _, k, v, start, length = _case(*shape, seed=sum(shape) + 2)
  qkv = rng.normal(size=(b, h + 2 * kv, d)).astype(np.float32)
  for i in range(b):  # what the new slot held before: must be overwritten, not attended
    k[i, :, length[i] - 1], v[i, :, length[i] - 1] = 1e4, -1e4
  inv_freq = attention.rope_inv_freq(rlthink.ModelConfig(head_dim=d, rope_theta=500.0))
  cos, sin = (np.concatenate([t, t], -1) for t in map(np.asarray, attention.rope_tables(
      jnp.asarray(length + 5), inv_freq)))
  qkv_bias = rng.normal(size=qkv.shape[1:]).astype(np.float32) if bias else None
  out, new_k, new_v = da.decode_attention(
      *map(jnp.asarray, (qkv, k, v, start, length)), rope=(jnp.asarray(cos), jnp.asarray(sin)),
      q_bias=None if qkv_bias is None else jnp.asarray(qkv_bias), heads=h, write_kv=True,
      chunk=s if whole_rows else None)
  expected, expected_k, expected_v = da.reference(qkv, k, v, start, length, (cos, sin), qkv_bias,
                                                  write_kv=True)
  np.testing.assert_allclose(np.asarray(new_k), expected_k, atol=1e-5)
  np.testing.assert_allclose(np.asarray(new_v), expected_v, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out), expected, atol=2e-6)
  changed = np.any(np.asarray(new_k) != k, axis=-1) | np.any(np.asarray(new_v) != v, axis=-1)
  assert changed.sum() == b * kv and all(changed[i, :, length[i] - 1].all() for i in range(b))


def test_write_kv_input_errors():
  q, k, v, start, length = _case(2, 4, 2, 32, 16, seed=3)
  with pytest.raises(ValueError, match="write_kv needs q/k/v rows"):
    da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)), heads=2, write_kv=True)
  fused = jnp.zeros((2, 8, 16))
  with pytest.raises(ValueError, match=r"q_bias must be \[8, 16\]"):
    da.decode_attention(fused, *map(jnp.asarray, (k, v, start, length)), heads=4,
                        q_bias=jnp.zeros((4, 16)), write_kv=True)


def test_large_batches_take_whole_rows():
  assert da._chunk(384, da.WHOLE_ROW_PROGRAMS) == 384  # one chunk: no merge
  assert da._chunk(384, 2) == 16 and da._chunk(384, 96) == 128  # chunks spread small batches


def test_whole_row_tilings_by_program_count(monkeypatch):
  """From WHOLE_ROW_PROGRAMS (row, KV head) programs on the kernel takes whole rows, tiled by
  the WHOLE_ROW_TILINGS entry of the largest count <= its programs (the block halved until it
  divides the row); below, chunks. Every way equals the reference."""
  seen = []
  kernel = da._kernel

  def spy(*refs, block, whole, **kwargs):
    seen.append((block, whole))
    return kernel(*refs, block=block, whole=whole, **kwargs)

  monkeypatch.setattr(da, "_kernel", spy)
  monkeypatch.setattr(da, "WHOLE_ROW_TILINGS", {1: (256, 8, 3), 8: (32, 4, 2)})
  for rows, threshold, want in ((2, 8, (16, False)),   # 4 programs < 8: 16-slot chunks
                                (2, 4, (128, True)),   # 256 halved to divide 384 slots
                                (4, 4, (32, True))):   # 8 programs: the entry of 8
    q, k, v, start, length = _case(rows, 14, 2, 384, 16, seed=5)
    monkeypatch.setattr(da, "WHOLE_ROW_PROGRAMS", threshold)
    seen.clear()
    out = da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)))
    assert seen and set(seen) == {want}
    np.testing.assert_allclose(np.asarray(out), da.reference(q, k, v, start, length), atol=2e-6)


def test_kernel_ignores_slots_outside_the_range():
  q, k, v, start, length = _case(4, 4, 2, 64, 16, seed=1)
  out = da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)))
  k2, v2 = k.copy(), v.copy()
  for i in range(4):  # garbage before start and after length must not matter
    k2[i, :, :start[i]] = v2[i, :, :start[i]] = 1e4
    k2[i, :, length[i]:] = v2[i, :, length[i]:] = -1e4
  out2 = da.decode_attention(*map(jnp.asarray, (q, k2, v2, start, length)))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(out2))


def test_kernel_bfloat16_close_to_reference():
  q, k, v, start, length = _case(2, 14, 2, 128, 64, seed=2)
  args = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
  out = da.decode_attention(*args, jnp.asarray(start), jnp.asarray(length))
  assert out.dtype == jnp.bfloat16
  ref = da.reference(*(np.asarray(a, np.float32) for a in args), start, length)
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=2e-2)


def test_kernel_rejects_bad_shapes():
  q, k, v, start, length = _case(2, 4, 2, 40, 16, seed=3)
  with pytest.raises(ValueError, match="multiple of 16"):
    da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)))
  q, k, v, start, length = _case(2, 3, 2, 32, 16, seed=3)
  with pytest.raises(ValueError, match="query heads"):
    da.decode_attention(*map(jnp.asarray, (q, k, v, start, length)))


def _sample(policy, attention, **kw):
  prompts = sf.ragged_prompts(policy.config.vocab_size, (6, 3, 11), seed=7)
  return rlthink.sample(policy, prompts, max_new_tokens=13, num_samples=2, seed=5,
                        stop_tokens=(), decode_attention=attention, **kw)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampler_with_kernel_equals_xla_attention(temperature):
  policy = sf.tiny_policy()
  ours, xla = (_sample(policy, a, temperature=temperature) for a in ("pallas", "xla"))
  np.testing.assert_array_equal(ours.completion_tokens, xla.completion_tokens)
  np.testing.assert_allclose(ours.logprobs, xla.logprobs, atol=1e-5)
  # And both equal one full forward over the finished sequences.
  np.testing.assert_allclose(ours.logprobs, sf.full_forward_logprobs(policy, ours) *
                             ours.completion_mask, atol=1e-4)


def test_sampler_with_kernel_and_qkv_bias_equals_xla_attention():
  """A Qwen2-style model (q/k/v biases, 3 query heads per KV head): the kernel adds q's bias and
  rotates q from the fused projection; the rollouts equal XLA attention's."""
  policy = sf.qwen2_bias_policy()
  ours, xla = (_sample(policy, a, temperature=1.0) for a in ("pallas", "xla"))
  np.testing.assert_array_equal(ours.completion_tokens, xla.completion_tokens)
  np.testing.assert_allclose(ours.logprobs, xla.logprobs, atol=1e-5)
  np.testing.assert_allclose(ours.logprobs, sf.full_forward_logprobs(policy, ours) *
                             ours.completion_mask, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 2, 1)])
def test_sampler_with_kernel_on_a_mesh(shape):
  """With a tensor axis the kernel gets q alone (the cache written by XLA); without one, the
  fused projection (the kernel writes the cache)."""
  base = sf.tiny_policy()
  mesh = sharding.make_mesh(shape, jax.devices()[:8])
  params = jax.device_put(base.params, decoder.param_shardings(base.config, mesh))
  sharded = base.replace(params=params, mesh=mesh)
  ours, ref = _sample(sharded, "pallas", temperature=1.0), _sample(base, "xla", temperature=1.0)
  np.testing.assert_array_equal(ours.completion_tokens, ref.completion_tokens)
  np.testing.assert_allclose(ours.logprobs, ref.logprobs, atol=1e-5)


def test_sampler_decode_attention_option_errors():
  policy = sf.tiny_policy()
  with pytest.raises(ValueError, match="not one of"):
    _sample(policy, "flash")
  with pytest.raises(ValueError, match="unroll_layers=True"):
    _sample(policy, "pallas", unroll_layers=False)


def test_auto_choice_of_the_decode_kernel():
  from rlthink.models.config import ModelConfig
  from rlthink.sampling import sampler
  bf16 = ModelConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_layers=1,
                     num_heads=4, num_kv_heads=2, max_seq_len=64, dtype="bfloat16")
  on_gpu = jax.default_backend() == "gpu"
  assert sampler._decode_attention("auto", bf16, True, 40) == ((True, 48) if on_gpu
                                                               else (False, 40))
  assert sampler._decode_attention("xla", bf16, True, 40) == (False, 40)
  assert sampler._decode_attention("pallas", bf16, True, 40) == (True, 48)
  f32 = bf16.replace(dtype="float32")
  assert sampler._decode_attention("auto", f32, True, 40) == (False, 40)
  odd = bf16.replace(hidden_size=96, head_dim=24)  # not a power of two: XLA, or a clear error
  assert sampler._decode_attention("auto", odd, True, 40) == (False, 40)
  with pytest.raises(ValueError, match="power-of-two head_dim"):
    sampler._decode_attention("pallas", odd, True, 40)
  short = bf16.replace(max_seq_len=60)  # 50 slots round up to 64 > 60
  assert sampler._decode_attention("auto", short, True, 50) == (False, 50)
  with pytest.raises(ValueError, match="max_seq_len=60"):
    sampler._decode_attention("pallas", short, True, 50)
