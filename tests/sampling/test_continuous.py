"""Continuous batching: with fewer slots than requests, `rlthink.sample` gives the same completions
as the static engine (each request draws from its own keys), in request order, on any slot count
and mesh; bad requests fail before compiling; one compiled program drains the whole queue."""

import jax
import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink import sharding
from rlthink.models import decoder
from rlthink.sampling import SlotOptions, continuous, engine

# Small prefill groups and chunks, a short margin: several in-loop prefill groups, prompts
# prefilled over several steps, and cache shifts, even at these sizes.
SMALL = SlotOptions(prefill_prompts=2, prefill_chunk=4, refills_per_step=2, margin=16)
STOPS = tuple(range(200, 260))  # ~12 % of the tiny vocabulary: ragged lengths


def _prompts(seed=7, lengths=(6, 3, 11, 1, 9, 2, 7, 14)):
  return sf.ragged_prompts(512, lengths, seed=seed)


def _same(ro, ref):
  np.testing.assert_array_equal(ro.completion_tokens, ref.completion_tokens)
  np.testing.assert_array_equal(ro.lengths, ref.lengths)
  np.testing.assert_array_equal(ro.stopped, ref.stopped)
  np.testing.assert_array_equal(ro.prompt_tokens, ref.prompt_tokens)
  np.testing.assert_array_equal(ro.prompt_index, ref.prompt_index)
  np.testing.assert_allclose(ro.logprobs, ref.logprobs, atol=1e-5)
  np.testing.assert_allclose(ro.sampling_logprobs, ref.sampling_logprobs, atol=1e-5)


CASES = {
    "sampled-3-slots": dict(slots=3, options=dict(temperature=1.0, top_p=0.9, num_samples=2)),
    # Greedy samples of a prompt are equal and a random model's greedy rows rarely stop: ragged
    # per-request limits instead.
    "greedy-5-slots": dict(slots=5, options=dict(
        temperature=0.0, num_samples=3,
        max_new_tokens_per_request=np.random.default_rng(1).integers(1, 21, 24))),
    "top-k-stacked-layers-1-slot": dict(slots=1, options=dict(
        temperature=0.7, top_k=20, num_samples=1, unroll_layers=False)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_continuous_gives_the_static_completions(case):
  slots, options = CASES[case]["slots"], CASES[case]["options"]
  policy, prompts = sf.tiny_policy(), _prompts()
  common = dict(max_new_tokens=20, seed=11, stop_tokens=STOPS, **options)
  ref = rlthink.sample(policy, prompts, **common)
  ro = rlthink.sample(policy, prompts, max_slots=slots, slot_options=SMALL, **common)
  _same(ro, ref)
  assert len(set(ref.lengths.tolist())) > 3  # ragged: slots were refilled at different steps
  # Fewer rows than requests: the loop ran more steps than the longest completion.
  assert int(ro.decode_steps) > int(ref.decode_steps)


def test_per_request_limits_with_the_default_schedule():
  """Each request stops at its own limit (finish reason "length") in both engines."""
  policy, prompts = sf.tiny_policy(), _prompts(seed=3)
  rng = np.random.default_rng(0)
  limits = rng.integers(1, 25, len(prompts) * 2)
  common = dict(max_new_tokens=24, temperature=1.0, num_samples=2, seed=4, stop_tokens=(),
                max_new_tokens_per_request=limits)
  ref = rlthink.sample(policy, prompts, **common)
  np.testing.assert_array_equal(ref.lengths, limits)
  assert not ref.stopped.any() and ref.finish_reason[0] == "length"
  _same(rlthink.sample(policy, prompts, max_slots=6, **common), ref)


def test_continuous_on_a_mesh_gives_the_single_device_completions(shape=(2, 2, 2)):
  """8 CPU devices: slots over (data, fsdp), heads over tensor."""
  base = sf.tiny_policy()
  mesh = sharding.make_mesh(shape, jax.devices()[:8])
  policy = base.replace(params=jax.device_put(base.params,
                                              decoder.param_shardings(base.config, mesh)),
                        mesh=mesh)
  prompts = _prompts(seed=5)
  common = dict(max_new_tokens=16, temperature=1.0, num_samples=3, seed=2, stop_tokens=STOPS)
  ref = rlthink.sample(base, prompts, **common)
  _same(rlthink.sample(policy, prompts, max_slots=8, slot_options=SMALL, **common), ref)


def test_pallas_decode_kernel_reads_the_refilled_rows():
  """The kernel attends over [a row's first valid slot, the write column]: the refilled prompt
  blocks must stay contiguous there (Pallas' interpreter on CPU)."""
  policy = rlthink.init_policy(sf.PEAKED.replace(head_dim=16, max_seq_len=128), seed=1)
  prompts = sf.ragged_prompts(32, (5, 2, 9, 3), seed=1)
  common = dict(max_new_tokens=12, temperature=1.0, num_samples=2, seed=8,
                stop_tokens=(3, 4), decode_attention="pallas")
  ref = rlthink.sample(policy, prompts, **common)
  _same(rlthink.sample(policy, prompts, max_slots=3, slot_options=SMALL, **common), ref)


def test_one_program_drains_any_queue_of_the_same_buckets():
  policy = sf.tiny_policy()
  common = dict(max_new_tokens=12, temperature=1.0, num_samples=2, stop_tokens=STOPS,
                max_slots=4, slot_options=SMALL)
  before = continuous.generate._cache_size()
  first = rlthink.sample(policy, _prompts(seed=1, lengths=(3, 9, 4, 12, 5, 6)), seed=0, **common)
  assert continuous.generate._cache_size() == before + 1
  # Another queue: other prompts, lengths and count (same buckets: <= 8 prompts of <= 16
  # tokens), another seed, so other refill times and cache shifts: no new program.
  second = rlthink.sample(policy, _prompts(seed=2, lengths=(7, 2, 15, 8, 1)), seed=3, **common)
  assert continuous.generate._cache_size() == before + 1
  assert first.num_rows == 12 and second.num_rows == 10
  assert int(first.decode_steps) != int(second.decode_steps)


@pytest.mark.parametrize("options,message", [
    (dict(max_new_tokens=100, max_slots=2, num_samples=2), "prompt 1 has 1000 tokens"),
    (dict(max_new_tokens=8, max_slots=2, max_new_tokens_per_request=[4, 9, 1, 1]),
     "max_new_tokens_per_request[1] = 9"),
    (dict(max_new_tokens=8, max_slots=2, max_new_tokens_per_request=[4, 2]),
     "one int per request"),
    (dict(max_new_tokens=8, max_slots=0), "max_slots must be None or a positive int"),
])
def test_bad_continuous_requests_fail_before_compiling(options, message):
  policy = sf.tiny_policy()
  prompts = [[1, 2, 3], [7] * 1000] if "prompt 1" in message else [[1, 2], [3], [4], [5]]
  compiled = continuous.generate._cache_size(), engine.generate._cache_size()
  with pytest.raises(ValueError) as info:
    rlthink.sample(policy, prompts, **options)
  assert message in str(info.value)
  assert (continuous.generate._cache_size(), engine.generate._cache_size()) == compiled


def test_slot_options_are_checked():
  from rlthink.sampling.config import SampleConfig
  assert SampleConfig(max_slots=4).sample_kwargs()["max_slots"] == 4  # gin-bindable
  with pytest.raises(ValueError, match="max_slots=0"):
    SampleConfig(max_slots=0)
  with pytest.raises(ValueError, match="SlotOptions.prefill_chunk=0"):
    SlotOptions(prefill_chunk=0)
  with pytest.raises(TypeError, match="slot_options must be"):
    rlthink.sample(sf.tiny_policy(), [[1], [2], [3]], max_new_tokens=2, max_slots=2,
                   slot_options={"prefill_chunk": 4})


def test_sample_async_returns_the_same_rollouts():
  from rlthink.sampling import sample_async
  policy, prompts = sf.tiny_policy(), _prompts()
  common = dict(max_new_tokens=8, temperature=1.0, num_samples=2, seed=1, stop_tokens=STOPS)
  pending = sample_async(policy, prompts, **common)
  ro = pending.result()
  assert pending.done() and pending.result() is ro
  _same(ro, rlthink.sample(policy, prompts, **common))


def test_decode_loop_copies_no_cache_buffer():
  """The loop's conditionals (refill, in-loop prefill) keep the KV buffers in place: a buffer
  passed through a conditional that a later one updates in place would be copied every step.
  Checked in the compiled HLO: no while-loop body copies an array of a KV buffer's size."""
  import re

  from rlthink.sampling import sampler
  policy = sf.tiny_policy("bfloat16")
  prompts = sf.ragged_prompts(512, (20, 5, 17, 9, 12, 3), seed=0)
  hlo = sampler.lower_sample(policy, prompts, max_new_tokens=40, num_samples=4, max_slots=16,
                             stop_tokens=()).compile().as_text()
  bodies = set(re.findall(r"body=%([\w.\-]+)", hlo))
  kv = policy.config.num_kv_heads * policy.config.head_dim
  smallest = 16 * kv * 16  # a prompt bank or cache buffer holds >= 16 rows x 16 columns
  copied, name = [], None
  for line in hlo.splitlines():
    if line and not line.startswith(" ") and "{" in line:
      name = line.split(" ")[0].lstrip("%")
    found = re.search(r"= (?:bf16|f32)\[([\d,]+)\]\S* copy\(", line)
    if name in bodies and found and np.prod([int(d) for d in found.group(1).split(",")]) >= (
        smallest):
      copied.append(line.strip()[:120])
  assert len(bodies) >= 2 and not copied, copied
