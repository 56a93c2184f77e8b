"""LoRA: adapters start as the base, a train step moves only them, their count is r*(in+out) per
matrix, and both exports (merged Hugging Face model, PEFT adapter folder) hold the adapted model."""

import json

import hf_fixtures
import jax
import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file

import rlthink
from rlthink import sharding
from rlthink.models import lora
from rlthink.train import OptimizerConfig, create_state, make_optimizer, make_train_step, sft_loss

ALL = tuple(lora.TARGETS)
CONFIG = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
              num_kv_heads=2, max_seq_len=64, tie_embeddings=False)


def _policy(**changes):
  return rlthink.init_policy("tiny", seed=0, **{**CONFIG, **changes})


def _tokens(seed=0, batch=2, length=12):
  return np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], (batch, length),
                                              dtype=np.int32)


def _random_b(adapters, seed=1):
  """Adapters with B drawn at random too (fresh ones have B = 0: no effect to test)."""
  rng = np.random.default_rng(seed)
  draw = lambda p, x: (np.float32(0.05 * rng.standard_normal(x.shape))
                       if p[-1].key.endswith(lora.B_SUFFIX) else x)
  return jax.tree_util.tree_map_with_path(draw, adapters)


def test_trainable_count_is_r_times_in_plus_out_per_matrix():
  c, cfg = rlthink.ModelConfig(**CONFIG), lora.LoRAConfig(rank=4, targets=ALL)
  adapters = jax.eval_shape(lambda: lora.init_adapters(c, cfg))
  e, h, kv, d, m, layers = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
                            c.intermediate_size, c.num_layers)
  per_layer = 4 * ((e + h * d) + 2 * (e + kv * d) + (h * d + e) + 2 * (e + m) + (m + e))
  count = sum(x.size for x in jax.tree.leaves(adapters))
  assert count == lora.num_adapter_params(c, cfg) == layers * per_layer
  assert sorted(adapters["layers"]["attn"]) == sorted(
      n + s for n in ("q_proj", "k_proj", "v_proj", "o_proj") for s in ("_lora_a", "_lora_b"))
  assert adapters["layers"]["attn"]["q_proj_lora_a"].shape == (layers, e, 4)
  assert adapters["layers"]["attn"]["q_proj_lora_b"].shape == (layers, 4, h, d)


def test_adapted_model_equals_the_base_at_init():
  policy = _policy()
  cfg = lora.LoRAConfig(rank=4, targets=ALL)
  combined = lora.combine(policy.params, lora.init_adapters(policy.config, cfg), cfg)
  tokens = _tokens()
  np.testing.assert_array_equal(policy.replace(params=combined).logits(tokens),
                                policy.logits(tokens))


def test_train_step_moves_only_the_adapters():
  policy = _policy()
  cfg = lora.LoRAConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
  trainable = lora.trainable(policy, cfg)
  assert trainable.base is policy.params  # no copy of the base
  before = jax.tree.map(np.array, policy.params)
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2), 10)
  state = create_state(trainable.params, optimizer, 0)
  # The train state holds the adapters and their optimizer moments, nothing of the base.
  count = lora.num_adapter_params(policy.config, cfg)
  assert sum(x.size for x in jax.tree.leaves(state.params)) == count
  assert sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim) == 2 * count
  step = make_train_step(trainable.loss(sft_loss(policy.config)), optimizer, state,
                         frozen=trainable.base)
  tokens = _tokens(length=16)
  batch = {"tokens": tokens, "loss_mask": np.ones_like(tokens, bool)}
  start = jax.tree.map(np.array, state.params)
  for _ in range(2):
    state, metrics = step(state, batch)
  assert bool(metrics["finite"])
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), start, state.params)
  assert all(jax.tree.leaves(moved)), moved
  # The base is untouched (bit for bit) and still alive: the step never donated it.
  jax.tree.map(np.testing.assert_array_equal, policy.params, before)
  adapted = policy.replace(params=trainable.policy_params(state.params))
  assert not np.allclose(adapted.logits(tokens), policy.logits(tokens))


def test_bfloat16_base_keeps_norms_and_trains():
  policy = _policy()
  trainable = lora.trainable(policy, lora.LoRAConfig(rank=2, base_dtype="bfloat16"))
  base = trainable.base
  assert base["layers"]["attn"]["q_proj"].dtype == np.dtype("bfloat16")
  assert base["layers"]["input_norm"]["scale"] is policy.params["layers"]["input_norm"]["scale"]
  assert jax.tree.leaves(trainable.params)[0].dtype == np.float32  # adapters: master dtype


def test_merged_export_matches_the_adapted_model_in_transformers(tmp_path):
  policy = _policy()
  cfg = lora.LoRAConfig(rank=4, alpha=8.0, targets=ALL)
  adapters = _random_b(lora.init_adapters(policy.config, cfg))
  adapted = policy.replace(params=lora.combine(policy.params, adapters, cfg))
  tokens = _tokens(length=10)
  ours = np.asarray(adapted.logits(tokens))
  assert not np.allclose(ours, policy.logits(tokens), atol=1e-3)
  merged = policy.replace(params=lora.merge(adapted.params))
  np.testing.assert_allclose(merged.logits(tokens), ours, rtol=1e-4, atol=1e-4)

  adapted.save_pretrained(str(tmp_path / "merged"))  # merges on the way out
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged",
                                                            attn_implementation="eager")
  assert hf_fixtures.max_rel_err(ours, hf_fixtures.hf_logits(model, tokens)) <= 1e-4

  # The PEFT folder: W_merged = W_base + (alpha / r) B A in PEFT's names and shapes.
  policy.save_pretrained(str(tmp_path / "base"))
  lora.save_peft(adapted, cfg, str(tmp_path / "peft"), base_model_name_or_path="base")
  config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (4, 8.0, "base")
  assert config["target_modules"] == list(ALL) and config["peft_type"] == "LORA"
  peft = load_file(tmp_path / "peft" / "adapter_model.safetensors")
  base = load_file(tmp_path / "base" / "model.safetensors")
  full = load_file(tmp_path / "merged" / "model.safetensors")
  assert len(peft) == 2 * len(ALL) * CONFIG["num_layers"]
  for i in range(CONFIG["num_layers"]):
    for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj",
                   "mlp.down_proj"):
      prefix = f"model.layers.{i}.{module}"
      a = peft[f"base_model.model.{prefix}.lora_A.weight"]
      b = peft[f"base_model.model.{prefix}.lora_B.weight"]
      out_dim, in_dim = base[f"{prefix}.weight"].shape
      assert a.shape == (4, in_dim) and b.shape == (out_dim, 4)
      np.testing.assert_allclose(base[f"{prefix}.weight"] + cfg.scale * b @ a,
                                 full[f"{prefix}.weight"], rtol=1e-5, atol=1e-6)


def test_config_is_checked_and_bindable():
  with pytest.raises(ValueError, match="LoRAConfig.targets"):
    lora.LoRAConfig(targets=("q", "k"))
  with pytest.raises(ValueError, match="LoRAConfig.rank"):
    lora.LoRAConfig(rank=0)
  with pytest.raises(ValueError, match="OptimizerConfig.lora"):
    OptimizerConfig(lora={"rank": 4})
  from rlthink import gin_utils
  gin_utils.parse([], ["OptimizerConfig.lora = @LoRAConfig()", "LoRAConfig.rank = 16",
                       "LoRAConfig.targets = ('q_proj', 'gate_proj')"])
  try:
    cfg = gin_utils.configured(OptimizerConfig).lora
  finally:
    import gin
    gin.clear_config()
  assert cfg == lora.LoRAConfig(rank=16, targets=("q_proj", "gate_proj"))


def test_adapters_read_back_are_placed_on_the_mesh_and_checked_against_the_config():
  config, mesh = rlthink.ModelConfig(**CONFIG), sharding.make_mesh()
  cfg = lora.LoRAConfig(rank=2, targets=("q_proj", "up_proj"))
  fresh = lora.init_adapters(config, cfg, mesh)
  saved = jax.tree.map(np.asarray, fresh)  # as a checkpoint gives them back
  placed = lora.place_adapters(saved, config, cfg, mesh)
  jax.tree.map(lambda a, b: a.sharding == b.sharding or pytest.fail("sharding"), placed, fresh)
  jax.tree.map(np.testing.assert_array_equal, placed, saved)
  with pytest.raises(ValueError, match=r"q_proj_lora_a.*expected shape .*rank 4"):
    lora.place_adapters(saved, config, lora.LoRAConfig(rank=4, targets=cfg.targets), mesh)
  with pytest.raises(ValueError, match=r"up_proj_lora_a.*not among targets"):
    lora.place_adapters(saved, config, lora.LoRAConfig(rank=2, targets=("q_proj",)), mesh)
