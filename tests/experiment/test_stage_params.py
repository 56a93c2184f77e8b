"""A stage's final policy read back from its checkpoint: a PPO stage checkpoints its policy with
a value model (separate) or a value head (shared trunk); what is read back is the policy alone,
as the stage returned it (its children, its deferred evaluation and `rlthink eval` read it)."""

import jax
import numpy as np
import pytest

import rlthink
from rlthink.algorithms import ppo
from rlthink.experiment import load_stage_params
from rlthink.train import Checkpointer, OptimizerConfig, create_state, make_optimizer


@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_a_ppo_stage_reads_back_as_its_policy(tmp_path, value_model):
  policy = rlthink.init_policy("tiny", seed=0, num_layers=1)
  trained = jax.tree.map(lambda x: x + 1.0, policy.params)
  params = ppo.initial_params(policy.replace(params=trained),
                              ppo.PPOConfig(value_model=value_model))
  state = create_state(params, make_optimizer(OptimizerConfig(), 10), seed=0)
  Checkpointer(str(tmp_path / "ppo"), policy.config).save(1, {"state": state}, {"iteration": 1})
  loaded = load_stage_params(str(tmp_path), "ppo", policy)
  assert jax.tree.structure(loaded) == jax.tree.structure(policy.params)
  jax.tree.map(np.testing.assert_array_equal, loaded, trained)
