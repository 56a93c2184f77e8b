"""The algorithm configs: plain dataclasses (no gin inside), registered with gin in one place,
built per gin scope by `gin_utils.configured`, the shared fields and their checks, and the one
per-stage optimizer override."""

import os
import subprocess
import sys

import gin
import pytest

from rlthink import algorithms, gin_utils
from rlthink.algorithms.config import IterationConfig, RoundConfig, stage_optimizer
from rlthink.algorithms.grpo import GRPOConfig
from rlthink.algorithms.ppo import PPOConfig, make_ppo_optimizer
from rlthink.train import OptimizerConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config(clear_constants=True)


def test_drivers_import_without_gin_or_the_task_pipeline():
  """The accelerator images have neither gin nor grain: the PPO/GRPO modules (the benchmarks'
  imports) must load without them."""
  code = ("import sys\n"
          "for name in ('gin', 'grain', 'tensorboardX'):\n"
          "  sys.modules[name] = None  # importing it raises ImportError\n"
          "import rlthink.algorithms.ppo, rlthink.algorithms.grpo, rlthink.algorithms.start\n"
          "assert 'gin' not in [m for m, v in sys.modules.items() if v is not None]\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]


def test_every_algorithm_config_binds_by_its_class_name():
  for name, algo in algorithms.ALGORITHMS.items():
    cls = algo.config_class()
    gin_utils.parse([], [f"{cls.__name__}.seed = 17"])
    assert gin_utils.configured(cls).seed == 17, name
    assert type(gin_utils.configured(cls)) is cls
    assert cls().seed == 0  # the class itself is plain: no gin inside


def test_scoped_bindings_apply_in_their_scope_and_unscoped_ones_everywhere():
  gin_utils.parse(["algorithms/grpo.gin"], ["rl_comp/GRPOConfig.iterations = 3",
                                            "GRPOConfig.seed = 7",
                                            "rl_memctx/GRPOConfig.seed = 8"])
  top = gin_utils.configured(GRPOConfig)
  with gin.config_scope("rl_comp"):
    comp = gin_utils.configured(GRPOConfig)
  with gin.config_scope("rl_memctx"):
    memctx = gin_utils.configured(GRPOConfig)
  assert (top.iterations, comp.iterations, memctx.iterations) == (20, 3, 20)  # grpo.gin: 20
  assert (top.seed, comp.seed, memctx.seed) == (7, 7, 8)  # a scoped binding beats the unscoped
  assert top.learning_rate == comp.learning_rate == 1e-6  # the file's, in every scope


def test_a_bad_bound_value_is_one_line_naming_class_value_scope_and_binding():
  gin_utils.parse([], ["rl_comp/GRPOConfig.samples_per_prompt = 1"])
  assert gin_utils.configured(GRPOConfig).samples_per_prompt == 8  # unscoped: the default
  with gin.config_scope("rl_comp"), pytest.raises(gin_utils.GinConfigError) as e:
    gin_utils.configured(GRPOConfig)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("--gin_param 'rl_comp/GRPOConfig.samples_per_prompt = 1': ")
  assert "GRPOConfig: samples_per_prompt=1" in message and "gin scope 'rl_comp'" in message


def test_shared_fields_are_checked_naming_the_config():
  with pytest.raises(ValueError, match=r"PPOConfig: iterations=0 \(must be >= 1\)"):
    PPOConfig(iterations=0)
  with pytest.raises(ValueError, match=r"GRPOConfig.reward_source='human' is not one of"):
    GRPOConfig(reward_source="human")
  with pytest.raises(ValueError, match=r"GRPOConfig.dense_reward='steps' is not one of"):
    GRPOConfig(dense_reward="steps")
  with pytest.raises(ValueError, match="minibatch_size=64 is more than the rollout batch"):
    GRPOConfig(prompts_per_iteration=4, samples_per_prompt=8, minibatch_size=64)
  with pytest.raises(ValueError, match="num_questions=0"):
    RoundConfig(num_questions=0)
  cfg = IterationConfig(prompts_per_iteration=4, samples_per_prompt=8, epochs=3,
                        minibatch_size=12)
  assert cfg.rows == 32 and cfg.steps_per_iteration == 3 * 3
  assert IterationConfig(prompts_per_iteration=2, samples_per_prompt=4).steps_per_iteration == 1
  assert RoundConfig(epochs=2.5, batch_size=4).steps_for(10) == 7  # ceil(25 / 4)
  assert RoundConfig(epochs=2.5, batch_size=4, max_steps_per_iteration=5).steps_for(10) == 5


def test_stage_optimizer_overrides_only_what_the_stage_sets():
  base = OptimizerConfig(learning_rate=3e-3, warmup_steps=10)
  assert stage_optimizer(base, GRPOConfig()) is base
  assert stage_optimizer(base, GRPOConfig(learning_rate=1e-5)) == OptimizerConfig(
      learning_rate=1e-5, warmup_steps=10)
  assert stage_optimizer(base, PPOConfig(warmup_steps=0)) == OptimizerConfig(learning_rate=3e-3,
                                                                             warmup_steps=0)


def test_ppo_value_rate_scales_from_the_stage_rate():
  """value_learning_rate is relative to the stage's own rate (its override of the experiment's)."""
  import jax
  import jax.numpy as jnp
  params = {"policy": {"w": jnp.zeros(3)}, "value": {"w": jnp.zeros(3)}}
  grads = {"policy": {"w": jnp.ones(3)}, "value": {"w": jnp.ones(3)}}
  for cfg, rates in ((PPOConfig(learning_rate=1e-3, value_learning_rate=1e-2), (1e-3, 1e-2)),
                     (PPOConfig(learning_rate=1e-3), (1e-3, 1e-3)),
                     (PPOConfig(), (3e-3, 3e-3))):
    opt = make_ppo_optimizer(OptimizerConfig(learning_rate=3e-3, clip_norm=None), cfg, 10)
    updates, _ = opt.update(grads, opt.init(params), params)
    step = jax.tree.map(lambda u: float(jnp.abs(u).max()), updates)  # Adam's first step: lr
    assert step["policy"]["w"] == pytest.approx(rates[0], rel=1e-3)
    assert step["value"]["w"] == pytest.approx(rates[1], rel=1e-3)
