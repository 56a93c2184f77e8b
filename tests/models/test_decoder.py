"""The decoder against transformers' PyTorch models: logits, padding, the KV cache and the heads.

Each tiny random model is written with transformers' own save_pretrained and read back with
`rlthink.load_pretrained`, so these tests also cover the import path of every architecture.
"""

import functools

import hf_fixtures
import jax
import numpy as np
import pytest
import torch

import rlthink
from rlthink.models import attention, decode, decoder

B, T = 2, 12
TOL = 1e-4


@functools.lru_cache(maxsize=None)
def _loaded(variant: str, tmp_root: str):
  path = f"{tmp_root}/{variant}"
  model = hf_fixtures.save_hf_model(variant, path)
  return model, rlthink.load_pretrained(path)


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("hf_models"))


def _tokens(seed=0, shape=(B, T)):
  return np.random.RandomState(seed).randint(0, 128, shape)


def _with_heads(policy, seed=1):
  """The loaded params plus random value and reward heads (their init is tested below)."""
  rng = np.random.RandomState(seed)
  e = policy.config.hidden_size
  heads = {f"{h}_{k}": np.float32(rng.randn(*shape)) for h in ("value", "reward")
           for k, shape in (("head", (e,)), ("bias", ()))}
  return policy.replace(params={**policy.params, **heads})


@pytest.mark.parametrize("variant", sorted(hf_fixtures.VARIANTS))
def test_logits_and_heads_match_transformers(variant, tmp_root):
  model, policy = _loaded(variant, tmp_root)
  policy = _with_heads(policy)
  tokens = _tokens()
  # Row 0 left-padded, row 1 right-padded: both conventions must give the same valid logits.
  mask = np.ones((B, T), bool)
  mask[0, :4] = False
  mask[1, 9:] = False
  for attention_mask, valid in ((None, None), (mask, mask)):
    out = policy.apply(tokens, attention_mask, heads=decoder.HEADS)
    expected = hf_fixtures.hf_logits(model, tokens, attention_mask)
    assert out["logits"].shape == (B, T, 128)
    assert hf_fixtures.max_rel_err(out["logits"], expected, valid) <= TOL
    # Value and reward heads: a linear map of transformers' final (normed) hidden state.
    kwargs = {}
    if attention_mask is not None:
      kwargs = dict(attention_mask=torch.from_numpy(mask.astype(np.int64)),
                    position_ids=torch.from_numpy(hf_fixtures.padding_positions(mask)))
    with torch.no_grad():
      hidden = model.model(input_ids=torch.from_numpy(tokens), **kwargs).last_hidden_state.numpy()
    for head in ("value", "reward"):
      w, b = (np.asarray(policy.params[f"{head}_{k}"]) for k in ("head", "bias"))
      assert out[head].shape == (B, T)
      assert hf_fixtures.max_rel_err(out[head], hidden @ w + b, valid) <= TOL


def test_llama3_rope_scaling_changes_all_three_frequency_bands(tmp_root):
  _, policy = _loaded("llama3_rope", tmp_root)
  config = policy.config
  assert (config.rope_type, config.rope_factor, config.rope_original_max_position) == (
      "llama3", 8.0, 32)
  scaled = attention.rope_inv_freq(config)
  plain = attention.rope_inv_freq(config.replace(rope_type="default"))
  ratio = scaled / plain
  assert np.any(np.isclose(ratio, 1.0)), ratio         # short wavelengths: untouched
  assert np.any(np.isclose(ratio, 1 / 8.0)), ratio     # long wavelengths: divided by the factor
  assert np.any((ratio < 0.99) & (ratio > 1 / 8.0 + 1e-3)), ratio  # in between: smoothed


def test_sliding_window_is_applied(tmp_root):
  model, policy = _loaded("mistral_window", tmp_root)
  assert policy.config.sliding_window == 5 < T
  tokens = _tokens(3)
  full_attention = policy.replace(config=policy.config.replace(sliding_window=None))
  expected = hf_fixtures.hf_logits(model, tokens)
  assert hf_fixtures.max_rel_err(full_attention.logits(tokens), expected) > 100 * TOL


@functools.partial(jax.jit, static_argnames="config")
def _cached_step(config, params, tokens, mask, cache):
  out, cache = decoder.forward(config, params, tokens, attention_mask=mask, cache=cache)
  return out["logits"], cache


@pytest.mark.parametrize("variant", ["mistral_window", "qwen3"])
def test_kv_cache_decoding_matches_full_forward(variant, tmp_root):
  model, policy = _loaded(variant, tmp_root)
  config, params = policy.config, policy.params
  tokens = _tokens(4)
  expected = np.asarray(policy.logits(tokens))

  # One token at a time from an empty cache.
  cache = decoder.init_cache(config, B, T)
  for t in range(T):
    logits, cache = _cached_step(config, params, tokens[:, t:t + 1], np.ones((B, 1), bool), cache)
    assert hf_fixtures.max_rel_err(logits[:, 0], expected[:, t]) <= TOL, t
  assert int(cache["index"]) == T

  # Prefill 7 tokens, then decode the rest one by one.
  cache = decoder.init_cache(config, B, T)
  logits, cache = _cached_step(config, params, tokens[:, :7], np.ones((B, 7), bool), cache)
  assert hf_fixtures.max_rel_err(logits, expected[:, :7]) <= TOL
  for t in range(7, T):
    logits, cache = _cached_step(config, params, tokens[:, t:t + 1], np.ones((B, 1), bool), cache)
    assert hf_fixtures.max_rel_err(logits[:, 0], expected[:, t]) <= TOL, t


@pytest.mark.parametrize("variant", ["qwen2", "llama_tied_bias", "qwen3"])
@pytest.mark.parametrize("layout", ["unrolled", "transposed", "fused"])
def test_decode_layouts_match_transformers(variant, layout, tmp_root):
  """The sampler's parameter layouts (`unstack_layers`, `transpose_for_decode`, fused q/k/v and
  gate/up) give transformers' logits, prefill and one-token decode steps alike."""
  model, policy = _loaded(variant, tmp_root)
  config = policy.config
  params = decode.unstack_layers(policy.params)
  if layout != "unrolled":
    params = decode.transpose_for_decode(params, fuse=layout == "fused")
  attn = params["layers_0"]["attn"]
  assert ("qkv_proj_t" in attn) == (layout == "fused")
  assert ("q_proj" in attn) == (layout == "unrolled")
  tokens = _tokens(6)
  expected = hf_fixtures.hf_logits(model, tokens, np.ones((B, T), bool))
  cache = decoder.init_cache(config, B, T, per_layer=True)
  logits, cache = _cached_step(config, params, tokens[:, :5], np.ones((B, 5), bool), cache)
  got = [np.asarray(logits)]
  for t in range(5, T):
    logits, cache = _cached_step(config, params, tokens[:, t:t + 1], np.ones((B, 1), bool), cache)
    got.append(np.asarray(logits))
  assert hf_fixtures.max_rel_err(np.concatenate(got, axis=1), expected) <= TOL


@pytest.mark.parametrize("variant", ["mistral_window", "qwen3"])
def test_kv_cache_left_padded_ragged_prompts_match_transformers(variant, tmp_root):
  model, policy = _loaded(variant, tmp_root)
  config, params = policy.config, policy.params
  prompt_len, new = 7, T - 7
  tokens = _tokens(5)
  mask = np.ones((B, T), bool)
  mask[0, :5] = False  # a 2-token prompt, left-padded to 7; row 1 has a full 7-token prompt
  expected = hf_fixtures.hf_logits(model, tokens, mask)

  cache = decoder.init_cache(config, B, T)
  logits, cache = _cached_step(config, params, tokens[:, :prompt_len], mask[:, :prompt_len], cache)
  got = [np.asarray(logits)]
  for t in range(prompt_len, prompt_len + new):
    logits, cache = _cached_step(config, params, tokens[:, t:t + 1], mask[:, t:t + 1], cache)
    got.append(np.asarray(logits))
  assert hf_fixtures.max_rel_err(np.concatenate(got, axis=1), expected, mask) <= TOL


def test_heads_init_for_every_architecture():
  configs = {
      "llama": dict(qkv_bias=True, o_bias=True, tie_embeddings=False),
      "mistral": dict(sliding_window=3),
      "qwen2": dict(qkv_bias=True),
      "qwen3": dict(qk_norm=True, head_dim=16),
  }
  tiny = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
              num_kv_heads=2)
  for arch, extra in configs.items():
    config = rlthink.ModelConfig(architecture=arch, **extra, **tiny)
    shapes, logical = decoder.abstract_params(config, heads=decoder.HEADS)
    trunk, _ = decoder.abstract_params(config)
    for head in ("value", "reward"):
      assert shapes[f"{head}_head"].shape == (32,) and logical[f"{head}_head"] == ("embed",)
      assert shapes[f"{head}_bias"].shape == () and logical[f"{head}_bias"] == ()
    assert jax.tree.structure(trunk) == jax.tree.structure(
        {k: v for k, v in shapes.items() if not k.startswith(("value_", "reward_"))})
  # One real init and forward (init compiles the whole model, so only once here).
  params = decoder.init_params(config, jax.random.key(0), heads=("value", "reward"))
  tokens = _tokens(6, (2, 5)) % 256
  out, cache = jax.jit(functools.partial(decoder.forward, config, heads=("value", "reward")))(
      params, tokens)
  assert cache is None and set(out) == {"value", "reward"}
  for head in ("value", "reward"):
    assert out[head].shape == (2, 5) and out[head].dtype == np.float32
    assert np.all(np.isfinite(out[head])) and np.std(np.asarray(out[head])) > 0


@pytest.mark.parametrize("name,published", [
    ("qwen2.5-0.5b", 494_032_768), ("qwen2.5-1.5b", 1_543_714_304),
    ("qwen2.5-3b", 3_085_938_688), ("qwen2.5-7b", 7_615_616_512),
    ("qwen3-0.6b", 596_049_920), ("llama3.2-1b", 1_235_814_400),
    ("llama3.1-8b", 8_030_261_248)])
def test_preset_shapes_have_the_published_parameter_counts(name, published):
  # The checkpoints' own parameter counts (the sum of their safetensors' tensor sizes).
  from rlthink.models.presets import get_preset
  shapes, _ = decoder.abstract_params(get_preset(name))
  counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert counted == get_preset(name).num_params == published
