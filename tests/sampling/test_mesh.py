"""Sharded sampling: the same seed gives the same rollouts on every mesh shape.

Batch rows go over (data, fsdp) and heads over tensor; each row samples with its own key, so the
rollouts must not depend on the mesh (8 forced CPU devices, see tests/conftest.py).
"""

import jax
import numpy as np
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink import sharding
from rlthink.models import decoder

MESHES = [(1, 1, 1), (8, 1, 1), (1, 8, 1), (2, 2, 2)]


def _sample_on(shape):
  devices = jax.devices()[:int(np.prod(shape))]
  mesh = sharding.make_mesh(shape, devices)
  base = sf.tiny_policy()  # the same weights, laid out on this mesh by the sharding rules
  params = jax.device_put(base.params, decoder.param_shardings(base.config, mesh))
  policy = base.replace(params=params, mesh=mesh)
  prompts = sf.ragged_prompts(policy.config.vocab_size, (6, 3, 11), seed=7)
  return rlthink.sample(policy, prompts, max_new_tokens=16, temperature=1.0, top_p=0.95,
                        num_samples=2, seed=123, stop_tokens=tuple(range(200, 230)))


@pytest.fixture(scope="module")
def reference():
  return _sample_on(MESHES[0])


@pytest.mark.parametrize("shape", MESHES[1:], ids=lambda s: "x".join(map(str, s)))
def test_same_seed_same_rollouts_on_every_mesh(shape, reference):
  ro = _sample_on(shape)
  np.testing.assert_array_equal(ro.completion_tokens, reference.completion_tokens)
  np.testing.assert_array_equal(ro.lengths, reference.lengths)
  np.testing.assert_array_equal(ro.stopped, reference.stopped)
  np.testing.assert_allclose(ro.logprobs, reference.logprobs, atol=1e-5)
  np.testing.assert_allclose(ro.sampling_logprobs, reference.sampling_logprobs, atol=1e-5)
  # Sanity: the rollouts are not degenerate (samples of one prompt differ).
  assert (ro.completion_tokens[0] != ro.completion_tokens[1]).any()


def test_fsdp_weights_are_gathered_once_not_per_decode_step():
  """On an fsdp mesh the sampler gathers the weights before the program (`engine.gather_fsdp`):
  the compiled sampling program itself holds no all-gather (it had one per weight per step)."""
  import re

  from rlthink.sampling import sampler
  mesh = sharding.make_mesh((1, 8, 1), jax.devices()[:8])
  base = sf.tiny_policy()
  params = jax.device_put(base.params, decoder.param_shardings(base.config, mesh))
  policy = base.replace(params=params, mesh=mesh)
  prompts = sf.ragged_prompts(policy.config.vocab_size, (6, 3, 11, 4), seed=7)
  hlo = sampler.lower_sample(policy, prompts, max_new_tokens=8).compile().as_text()
  assert not re.search(r"all-gather", hlo)


def test_fsdp_gather_is_skipped_with_a_warning_when_it_would_not_fit(caplog):
  from rlthink.sampling import engine
  mesh = sharding.make_mesh((1, 8, 1), jax.devices()[:8])
  base = sf.tiny_policy()
  params = jax.device_put(base.params, decoder.param_shardings(base.config, mesh))
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  fsdp_specs = [x.sharding.spec for x in jax.tree.leaves(params)]
  assert any("fsdp" in str(s) for s in fsdp_specs)
  gathered = engine.gather_fsdp(params, mesh, device_memory=4 * total)
  assert all("fsdp" not in str(x.sharding.spec) for x in jax.tree.leaves(gathered))
  with caplog.at_level("WARNING"):
    kept = engine.gather_fsdp(params, mesh, device_memory=total)  # > half of it: keep sharded
  assert [x.sharding.spec for x in jax.tree.leaves(kept)] == fsdp_specs
  assert "keeps the weights fsdp-sharded" in caplog.text
