"""PPO's arrays on a (1, 2, 1) mesh: every model-sized array is split over the two devices.

The benchmark's optimizer state used to come from a plain `jax.jit(optimizer.init)`, which reads
no param value: a program without inputs, run on device 0 only, so both AdamW moments of every
model (twice the float32 params) landed whole on the first device and ran it out of memory.
"""

import jax
import numpy as np
import pytest

from rlthink import sharding
from rlthink.algorithms import ppo, scoring
from rlthink.bench import ppo as bench_ppo
from rlthink.models import decoder
from rlthink.models.presets import get_preset
from rlthink.policy import Policy
from rlthink.sampling import engine

CONFIG = get_preset("tiny", num_layers=2, dtype="bfloat16", param_dtype="float32")


def _bytes_per_device(tree, devices) -> list[int]:
  per = {d: 0 for d in devices}
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      per[shard.device] = per.get(shard.device, 0) + shard.data.nbytes
  return [per[d] for d in devices]


@pytest.fixture(scope="module")
def policy():
  devices = jax.devices()[:2]
  mesh = sharding.make_mesh((1, 2, 1), devices=devices, config=CONFIG)
  return Policy(CONFIG, decoder.init_params(CONFIG, jax.random.key(0), mesh=mesh), mesh)


def _assert_split(tree, devices, what):
  per, total = _bytes_per_device(tree, devices), sum(x.nbytes for x in jax.tree.leaves(tree))
  # fsdp=2 halves every weight; only small vectors the mesh cannot split are replicated.
  assert max(per) <= 0.55 * total, f"{what}: bytes per device {per} of {total}"


@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_bench_train_state_is_split_over_the_mesh(policy, value_model):
  devices = list(policy.mesh.devices.flat)
  cfg = ppo.PPOConfig(prompts_per_iteration=4, minibatch_size=2, value_model=value_model)
  state, _ = bench_ppo.init_training(policy, cfg, 1e-6, policy.mesh)
  _assert_split(state.params, devices, "params")
  _assert_split(state.opt_state, devices, "optimizer state")
  # Each moment has its param's sharding (the donated update then keeps them in place).
  params = jax.tree_util.tree_leaves_with_path(state.params)
  for path, x in jax.tree_util.tree_leaves_with_path(state.opt_state):
    mirror = [p for q, p in params if jax.tree_util.keystr(path).endswith(jax.tree_util.keystr(q))]
    if mirror:
      assert x.sharding.is_equivalent_to(mirror[0].sharding, x.ndim), jax.tree_util.keystr(path)


def test_reference_and_sampling_params_are_split_over_the_mesh(policy):
  devices = list(policy.mesh.devices.flat)
  _assert_split(scoring.frozen_reference(policy.params, CONFIG), devices, "reference")
  _assert_split(engine.params_for_sampling(policy.params, CONFIG, True), devices,
                "sampling params")
  per_device = _bytes_per_device(policy.params, devices)
  reference = _bytes_per_device(scoring.frozen_reference(policy.params, CONFIG), devices)
  np.testing.assert_allclose(reference, np.asarray(per_device) / 2, rtol=0.05)  # bf16 of float32
