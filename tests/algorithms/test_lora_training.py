"""LoRA in the drivers: SFT and GRPO train only adapters (checkpoints hold nothing else), the base
comes back untouched, and GRPO's reference policy is the base itself, not a copy."""

import jax
import numpy as np
import pytest

from rlthink import tasks
from rlthink.algorithms import grpo, loop
from rlthink.algorithms.grpo import GRPOConfig
from rlthink.algorithms.sft import SFTConfig, run_sft
from rlthink.models import lora
from rlthink.train import OptimizerConfig

import rl_fixtures

LORA = lora.LoRAConfig(rank=2, alpha=4.0, targets=("q_proj", "v_proj", "up_proj"))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return tasks.get("arithmetic", size="tiny", seed=0, num_train=32, num_test=4,
                   data_dir=str(tmp_path_factory.mktemp("data")))


def _adapter_sizes(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def test_sft_with_lora_trains_only_the_adapters(task, tmp_path):
  policy = rl_fixtures.tiny_policy()
  before = jax.tree.map(np.array, policy.params)
  trained, _ = run_sft(policy, task, SFTConfig(steps=3, batch_size=4, max_length=96, log_every=3,
                                               checkpoint_every=3),
                       OptimizerConfig(learning_rate=1e-2, lora=LORA), str(tmp_path),
                       progress=False)
  base, adapters = lora.split(trained.params)
  jax.tree.map(np.testing.assert_array_equal, base, before)
  assert all(np.any(x) for x in jax.tree.leaves(adapters))  # B moved off zero
  saved, _ = rl_fixtures.saved_tree(str(tmp_path), 3)
  assert _adapter_sizes(saved["params"]) == lora.num_adapter_params(policy.config, LORA)


def test_grpo_with_lora_scores_the_reference_with_the_base(task, tmp_path):
  policy = rl_fixtures.tiny_policy()
  cfg = GRPOConfig(iterations=1, num_questions=2, prompts_per_iteration=2, samples_per_prompt=2,
                   max_new_tokens=6, kl_coef=0.1, old_logprobs="forward", log_every=1)
  seen = {}

  def prepare(it: loop.Iteration):
    seen["reference"] = it.tree["reference"]
    seen["params"] = it.tree["state"].params
    return grpo.prepare_batch(policy.config, it.tree["state"].params, it.tree["reference"],
                              it.scored.rollouts, it.rewards.final, cfg)

  update = loop.policy_update("grpo", policy, cfg,
                              OptimizerConfig(learning_rate=1e-2, lora=LORA),
                              grpo.grpo_loss(policy.config, cfg), prepare)
  assert update.base is policy.params and "reference" not in update.frozen
  final, history = loop.run_iterations(policy, task, cfg, str(tmp_path), update, progress=False)
  # The reference is the policy's own params object (adapters off), never a copy.
  assert seen["reference"] is policy.params
  assert lora.has_adapters(seen["params"]) and not lora.has_adapters(seen["reference"])
  assert history[0]["kl"] >= 0
  saved, _ = rl_fixtures.saved_tree(str(tmp_path), 1)
  assert set(saved) == {"state"}  # no base, no reference checkpointed
  assert (_adapter_sizes(saved["state"]["params"]) ==
          lora.num_adapter_params(policy.config, LORA))
  base, _ = lora.split(final.params)
  jax.tree.map(lambda a, b: a is b or pytest.fail("base replaced"), base, policy.params)
