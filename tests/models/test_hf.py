"""Hugging Face import/export: round trips through transformers, config parsing, and the errors
a user sees for each broken input."""

import dataclasses
import json
import os
import stat

import hf_fixtures
import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

import rlthink
from rlthink.models import attention, decoder, hf
from rlthink.models.tokenizer import builtin_tokenizer

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
            num_kv_heads=2, max_seq_len=64, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
            pad_token_id=0)
EXPORTS = {  # our config -> the transformers class it must load as
    # Llama with q/k/v bias but no o bias: exported as attention_bias with a zero o_proj bias.
    "LlamaForCausalLM": dict(architecture="llama", qkv_bias=True, tie_embeddings=False,
                             rope_type="llama3", rope_factor=8.0, rope_original_max_position=32,
                             rope_theta=10000.0),
    "MistralForCausalLM": dict(architecture="mistral", sliding_window=4, rope_type="linear",
                               rope_factor=2.0),
    "Qwen2ForCausalLM": dict(architecture="qwen2", qkv_bias=True),
    "Qwen3ForCausalLM": dict(architecture="qwen3", qk_norm=True, head_dim=32, num_kv_heads=1,
                             tie_embeddings=False),
}


def random_policy(seed=0, tokenizer=None, **config) -> rlthink.Policy:
  """A policy whose every parameter (norm scales and biases too) is random."""
  config = rlthink.ModelConfig(**{**TINY, **config})
  shapes, _ = decoder.abstract_params(config)
  rng = np.random.RandomState(seed)

  def draw(path, s):
    name = "/".join(k.key for k in path)
    base = 1.0 if name.endswith("scale") else 0.0
    std = 0.2 if name.endswith(("scale", "bias")) else 0.1
    return np.float32(base + std * rng.randn(*s.shape))

  params = jax.tree_util.tree_map_with_path(draw, shapes)
  return rlthink.Policy(config=config, params=params, tokenizer=tokenizer)


def _flat(params):
  return {"/".join(k.key for k in p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}


def _tokens(seed=0):
  return np.random.RandomState(seed).randint(0, 128, (2, 10))


def _expected_hf_state(policy) -> dict:
  """The Hugging Face state dict of `policy`, written out by hand from the layout definitions."""
  c, p = policy.config, _flat(policy.params)
  e, h, kv, d = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
  out = {"model.embed_tokens.weight": p["embedding"], "model.norm.weight": p["final_norm/scale"],
         "lm_head.weight": p["embedding"] if c.tie_embeddings else p["lm_head"].T}
  for i in range(c.num_layers):
    pre, a = f"model.layers.{i}.", lambda k: p[f"layers/attn/{k}"][i]
    out[pre + "input_layernorm.weight"] = p["layers/input_norm/scale"][i]
    out[pre + "post_attention_layernorm.weight"] = p["layers/post_attn_norm/scale"][i]
    for name, n in (("q", h), ("k", kv), ("v", kv)):
      out[pre + f"self_attn.{name}_proj.weight"] = a(f"{name}_proj").reshape(e, n * d).T
      if c.qkv_bias:
        out[pre + f"self_attn.{name}_proj.bias"] = a(f"{name}_bias").reshape(n * d)
    out[pre + "self_attn.o_proj.weight"] = a("o_proj").reshape(h * d, e).T
    if c.qk_norm:
      out[pre + "self_attn.q_norm.weight"] = a("q_norm/scale")
      out[pre + "self_attn.k_norm.weight"] = a("k_norm/scale")
    for name in ("gate", "up", "down"):
      out[pre + f"mlp.{name}_proj.weight"] = p[f"layers/mlp/{name}_proj"][i].T
  return out


@pytest.mark.parametrize("hf_class", sorted(EXPORTS))
def test_export_loads_in_transformers_and_back_in_rlthink(hf_class, tmp_path):
  policy = random_policy(**EXPORTS[hf_class])
  out = tmp_path / "export"
  policy.save_pretrained(str(out))

  model = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
  assert type(model).__name__ == hf_class and model.dtype == torch.float32
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  for name, expected in _expected_hf_state(policy).items():
    np.testing.assert_array_equal(state.pop(name), expected, err_msg=name)
  # What is left is what we did not have: zero biases the architecture requires.
  assert all(k.endswith("bias") and not v.any() for k, v in state.items()), sorted(state)
  tokens = _tokens()
  expected = hf_fixtures.hf_logits(model, tokens)
  assert hf_fixtures.max_rel_err(policy.logits(tokens), expected) <= 1e-4

  loaded = rlthink.load_pretrained(out)
  ours, back = _flat(policy.params), _flat(loaded.params)
  if hf_class == "LlamaForCausalLM":  # attention_bias covers o_proj too: it comes back as zeros
    assert loaded.config == policy.config.replace(o_bias=True)
    assert not back.pop("layers/attn/o_bias").any()
  else:
    assert loaded.config == policy.config
  assert sorted(ours) == sorted(back)
  for name in ours:
    np.testing.assert_array_equal(back[name], ours[name], err_msg=name)


def test_bfloat16_and_multi_file_export(tmp_path):
  policy = random_policy(**EXPORTS["Qwen2ForCausalLM"])
  out = tmp_path / "bf16"
  policy.save_pretrained(str(out))  # float32 reference copy
  hf.save_pretrained(policy, str(out), dtype="bfloat16", max_shard_bytes=40_000,
                     overwrite=True)
  files = sorted(os.listdir(out))
  shards = [f for f in files if f.startswith("model-")]
  assert len(shards) > 2 and "model.safetensors.index.json" in files
  assert "model.safetensors" not in files
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  assert {str(x.dtype) for f in shards for x in load_file(str(out / f)).values()} == {"bfloat16"}

  loaded = rlthink.load_pretrained(out)
  ours, back = _flat(policy.params), _flat(loaded.params)
  for name in ours:
    assert back[name].dtype == np.float32
    rounded = ours[name].astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(back[name], rounded, err_msg=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
  tokens = _tokens(1)
  expected = hf_fixtures.hf_logits(model, tokens)
  assert hf_fixtures.max_rel_err(loaded.logits(tokens), expected) <= 1e-4


def test_tokenizer_travels_with_the_model(tmp_path):
  tok = builtin_tokenizer()
  policy = random_policy(tokenizer=tok)
  policy.save_pretrained(str(tmp_path / "m"))
  loaded = rlthink.load_pretrained(tmp_path / "m")
  text = "12+30=<think>42</think>\n"
  assert loaded.tokenizer is not None and loaded.tokenizer.encode(text) == tok.encode(text)
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
  assert hf_tok.encode(text) == tok.encode(text)


def test_every_eos_id_and_the_generation_config_survive_a_round_trip(tmp_path):
  import torch
  source = tmp_path / "source"
  hf_fixtures.save_hf_model("qwen2", source, eos_token_id=[5, 9], pad_token_id=0)
  with open(source / "generation_config.json") as f:
    source_generation = json.load(f)
  source_generation.update(temperature=0.7, top_p=0.8, do_sample=True)
  (source / "generation_config.json").write_text(json.dumps(source_generation))
  policy = rlthink.load_pretrained(source)
  assert policy.config.eos_token_id == (5, 9)
  policy.save_pretrained(str(tmp_path / "out"),
                         generation_config=hf.read_generation_config(source))
  with open(tmp_path / "out" / "config.json") as f:
    assert json.load(f)["eos_token_id"] == [5, 9]
  with open(tmp_path / "out" / "generation_config.json") as f:
    generation = json.load(f)
  assert (generation["eos_token_id"], generation["temperature"], generation["top_p"]) == (
      [5, 9], 0.7, 0.8)
  assert rlthink.load_pretrained(tmp_path / "out").config.eos_token_id == (5, 9)
  # transformers' generate stops on the second eos id: force it as the first greedy token.
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out",
                                                            dtype=torch.float32).eval()
  with torch.no_grad():
    model.lm_head.weight.zero_()
    model.lm_head.weight[9, 0] = 1.0  # every logit 0 but id 9's (given a positive hidden[0])
    model.model.norm.weight.zero_()
    model.model.norm.weight[0] = 1.0
    inputs = torch.tensor([[3, 4]])
    hidden = model.model(inputs).last_hidden_state
    sign = 1.0 if hidden[0, -1, 0] > 0 else -1.0
    model.lm_head.weight[9, 0] = sign
    out = model.generate(inputs, max_new_tokens=8, do_sample=False)
  assert out[0, 2:].tolist() == [9]


def test_checkpoints_of_an_int_eos_id_still_match_the_tuple(tmp_path):
  from rlthink.train import Checkpointer
  config = rlthink.ModelConfig(**TINY)
  assert config.eos_token_id == (2,)
  meta = {"model_config": dict(dataclasses.asdict(config), eos_token_id=2)}  # written before
  Checkpointer(str(tmp_path), config).check_compatible(meta)
  Checkpointer(str(tmp_path), config).check_compatible(
      {"model_config": dict(meta["model_config"], eos_token_id=[2])})  # JSON of the tuple
  with pytest.raises(ValueError, match="eos_token_id"):
    Checkpointer(str(tmp_path), config).check_compatible(
        {"model_config": dict(meta["model_config"], eos_token_id=3)})


def test_load_overrides_and_checkpoint_dtype(tmp_path):
  hf_fixtures.save_hf_model("qwen2", tmp_path, seed=3)
  # The checkpoint as bfloat16: parameters still come back float32.
  weights = load_file(str(tmp_path / "model.safetensors"))
  save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()},
            str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  policy = rlthink.load_pretrained(tmp_path, dtype="bfloat16", max_seq_len=32, remat=True)
  assert (policy.config.dtype, policy.config.max_seq_len, policy.config.remat) == (
      "bfloat16", 32, True)
  assert policy.params["embedding"].dtype == np.float32
  np.testing.assert_array_equal(
      policy.params["embedding"],
      weights["model.embed_tokens.weight"].astype(ml_dtypes.bfloat16).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Config parsing.


def test_old_and_new_rope_config_styles_agree():
  base = dict(architectures=["LlamaForCausalLM"], vocab_size=128, hidden_size=64,
              intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256)
  scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                 original_max_position_embeddings=64)
  old = dict(base, rope_theta=500000.0, rope_scaling=dict(scaling, rope_type="llama3"))
  new = dict(base, rope_parameters=dict(scaling, rope_type="llama3", rope_theta=500000.0))
  assert hf.config_from_hf(old, "old") == hf.config_from_hf(new, "new")
  config = hf.config_from_hf(new, "new")
  assert (config.rope_type, config.rope_theta, config.rope_factor,
          config.rope_original_max_position, config.num_kv_heads) == ("llama3", 5e5, 8.0, 64, 4)
  linear = hf.config_from_hf(dict(base, rope_scaling={"type": "linear", "factor": 2.0}), "x")
  assert (linear.rope_type, linear.rope_factor, linear.rope_theta) == ("linear", 2.0, 10000.0)
  # Both keys present: rope_parameters wins, as in transformers.
  both = hf.config_from_hf(dict(new, rope_theta=1.0, rope_scaling=None), "x")
  assert both == config
  # A list of eos ids (Llama 3.1 instruct) is kept whole; one id becomes a 1-tuple.
  assert hf.config_from_hf(dict(base, eos_token_id=[7, 8]), "x").eos_token_id == (7, 8)
  assert hf.config_from_hf(dict(base, eos_token_id=7), "x").eos_token_id == (7,)


def test_config_to_hf_round_trips_and_matches_transformers():
  for extra in EXPORTS.values():
    config = rlthink.ModelConfig(**{**TINY, **extra})
    as_dict = hf.config_to_hf(config)
    o_bias = config.o_bias or (config.architecture == "llama" and config.qkv_bias)
    assert hf.config_from_hf(as_dict, "x") == config.replace(o_bias=o_bias)
    parsed = transformers.AutoConfig.for_model(**as_dict)
    assert (parsed.head_dim, parsed.num_key_value_heads, parsed.tie_word_embeddings) == (
        config.head_dim, config.num_kv_heads, config.tie_embeddings)
    assert getattr(parsed, "sliding_window", None) == config.sliding_window
    # transformers' own RoPE frequencies for the exported config equal the decoder's.
    if config.rope_type != "default":
      init = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[config.rope_type]
      inv_freq = init(parsed, "cpu")[0].numpy()
      np.testing.assert_allclose(attention.rope_inv_freq(config), inv_freq, rtol=1e-6)


@pytest.mark.parametrize("extra, message", [
    (dict(architecture="qwen3"), "qk_norm=False"),
    (dict(architecture="llama", qk_norm=True), "qk_norm=True"),
    (dict(architecture="mistral", qkv_bias=True), "Mistral has no biases"),
    (dict(architecture="qwen2", o_bias=True), "no o_proj bias"),
    (dict(architecture="llama", sliding_window=8), "sliding_window=8"),
])
def test_config_to_hf_rejects_what_the_format_cannot_hold(extra, message):
  with pytest.raises(ValueError, match=message):
    hf.config_to_hf(rlthink.ModelConfig(**{**TINY, **extra}))


# ------------------------------------------------------------------------------------------------
# Errors on bad inputs: each names the file / key / tensor.


@pytest.fixture
def good_dir(tmp_path):
  hf_fixtures.save_hf_model("llama", tmp_path / "m")
  return tmp_path / "m"


def _edit_config(path, **changes):
  config = json.loads((path / "config.json").read_text())
  config.update(changes)
  (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    (dict(architectures=["GPT2LMHeadModel"]), r"architectures=\['GPT2LMHeadModel'\]"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
     "rope_parameters.rope_type='yarn'"),
    (dict(rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0}),
     "rope_scaling.rope_type='dynamic'"),
    (dict(rope_parameters={"rope_type": "linear", "rope_theta": 1e4}), "needs 'factor'"),
    (dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=True,
          sliding_window=4, max_window_layers=0), "use_sliding_window=True"),
    (dict(num_attention_heads=3, head_dim=None), "num_heads=3"),
])
def test_unsupported_configs_raise_naming_file_and_key(good_dir, changes, message):
  _edit_config(good_dir, **changes)
  with pytest.raises(ValueError, match=message) as e:
    rlthink.load_pretrained(good_dir)
  assert str(good_dir / "config.json") in str(e.value)


def test_missing_or_broken_files_raise_naming_them(tmp_path, good_dir):
  with pytest.raises(FileNotFoundError, match="config.json"):
    rlthink.load_pretrained(tmp_path / "nowhere")
  (tmp_path / "bad_json").mkdir()
  (tmp_path / "bad_json" / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"bad_json/config.json is not valid JSON"):
    rlthink.load_pretrained(tmp_path / "bad_json")

  weights = good_dir / "model.safetensors"
  data = weights.read_bytes()
  weights.rename(good_dir / "elsewhere.bin")
  with pytest.raises(FileNotFoundError, match=f"{good_dir} has no model.safetensors"):
    rlthink.load_pretrained(good_dir)
  weights.write_bytes(data[: len(data) // 2])  # truncated
  with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
    rlthink.load_pretrained(good_dir)
  weights.write_bytes(b"\x00" * 100)  # garbage
  with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
    rlthink.load_pretrained(good_dir)


def test_missing_tensor_and_wrong_shape_name_the_tensor(good_dir):
  file = str(good_dir / "model.safetensors")
  weights = load_file(file)
  up = weights.pop("model.layers.1.mlp.up_proj.weight")
  save_file(weights, file, metadata={"format": "pt"})
  with pytest.raises(ValueError, match="tensor model.layers.1.mlp.up_proj.weight is missing"):
    rlthink.load_pretrained(good_dir)
  weights["model.layers.1.mlp.up_proj.weight"] = up[:, :-1]
  save_file(weights, file, metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"tensor model.layers.1.mlp.up_proj.weight in .* has shape "
                                       r"\[128, 63\], expected \[128, 64\]"):
    rlthink.load_pretrained(good_dir)


def test_sharded_checkpoint_with_a_missing_shard(tmp_path):
  random_policy().save_pretrained(str(tmp_path / "m"))
  hf.save_pretrained(random_policy(), str(tmp_path / "m"), max_shard_bytes=60_000,
                     overwrite=True)
  shard = sorted(f for f in os.listdir(tmp_path / "m") if f.startswith("model-"))[-1]
  os.remove(tmp_path / "m" / shard)
  with pytest.raises(FileNotFoundError, match=f"{shard} is missing"):
    rlthink.load_pretrained(tmp_path / "m")


def test_broken_tokenizer_files_raise_naming_the_directory(good_dir):
  (good_dir / "tokenizer_config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=f"{good_dir} has no tokenizer: expected one of "
                                              "tokenizer.json"):
    rlthink.load_pretrained(good_dir)
  (good_dir / "tokenizer.json").write_text("{broken")
  with pytest.raises(ValueError, match=f"could not load the tokenizer in {good_dir}"):
    rlthink.load_pretrained(good_dir)


# ------------------------------------------------------------------------------------------------
# Export is all or nothing.


def _snapshot(path):
  return {f: (path / f).read_bytes() for f in sorted(os.listdir(path))}


def test_failed_export_leaves_nothing_and_keeps_an_existing_export(tmp_path, monkeypatch):
  policy = random_policy(tokenizer=builtin_tokenizer())
  calls = []

  def failing_save_file(tensors, filename, metadata=None):
    calls.append(filename)
    save_file(tensors, filename, metadata=metadata)  # a partial file really exists...
    raise OSError("disk full")                        # ...when the export fails

  monkeypatch.setattr(hf, "save_file", failing_save_file)
  with pytest.raises(OSError, match="disk full"):
    policy.save_pretrained(str(tmp_path / "new"))
  assert calls and os.listdir(tmp_path) == []

  monkeypatch.undo()
  policy.save_pretrained(str(tmp_path / "old"))
  before = _snapshot(tmp_path / "old")
  monkeypatch.setattr(hf, "save_file", failing_save_file)
  with pytest.raises(OSError, match="disk full"):
    random_policy(seed=1).save_pretrained(str(tmp_path / "old"), overwrite=True)
  assert os.listdir(tmp_path) == ["old"] and _snapshot(tmp_path / "old") == before

  monkeypatch.undo()  # a successful export replaces the directory as a whole
  random_policy(seed=1).save_pretrained(str(tmp_path / "old"), overwrite=True)
  assert os.listdir(tmp_path) == ["old"] and "tokenizer.json" not in os.listdir(tmp_path / "old")
  assert _snapshot(tmp_path / "old")["model.safetensors"] != before["model.safetensors"]


def test_export_refuses_to_replace_a_directory_that_is_not_a_model(tmp_path):
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "thesis.tex").write_text("precious")
  with pytest.raises(FileExistsError, match="is not a model directory"):
    random_policy().save_pretrained(str(tmp_path / "notes"))
  assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_export_refuses_a_non_empty_directory_unless_overwrite_and_uses_normal_permissions(
    tmp_path):
  out = tmp_path / "export"
  random_policy().save_pretrained(str(out))
  (out / "README.md").write_text("my notes")
  before = _snapshot(out)
  with pytest.raises(FileExistsError, match=r"export is not empty .*overwrite=True"):
    random_policy(seed=1).save_pretrained(str(out))
  assert _snapshot(out) == before  # nothing of the user's was touched
  random_policy(seed=1).save_pretrained(str(out), overwrite=True)
  assert _snapshot(out)["model.safetensors"] != before["model.safetensors"]
  umask = os.umask(0o022)
  os.umask(umask)
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~umask
  for name in os.listdir(out):
    assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o666 & ~umask, name
  (tmp_path / "empty").mkdir()  # an empty directory is fine without overwrite
  random_policy().save_pretrained(str(tmp_path / "empty"))
  assert "config.json" in os.listdir(tmp_path / "empty")
