"""Tiny random `transformers` models (PyTorch, float32, CPU): the reference in parity tests.

Every weight is random, norms and biases included, so a parameter mapped to the wrong place (or
not at all) changes the logits.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

_TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             rms_norm_eps=1e-5)

# name -> (config class, model class, config overrides). Llama3-style RoPE scaling with a small
# original_max_position (32): with head_dim 16 the wavelengths span 6..20000, so the high, the
# medium (smoothed) and the low frequency regimes all occur.
VARIANTS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0})),
    "llama_tied_bias": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, attention_bias=True)),
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "llama_linear_rope": ("LlamaConfig", "LlamaForCausalLM", dict(rope_parameters={
        "rope_type": "linear", "rope_theta": 500.0, "factor": 4.0})),
    "mistral_window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=5)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32, num_key_value_heads=1)),
}


def make_hf_model(variant: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
  """A tiny random model of `variant` (a key of VARIANTS), in eval mode."""
  config_cls, model_cls, extra = VARIANTS[variant]
  config = getattr(transformers, config_cls)(**{**_TINY, **extra, **overrides})
  config._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = getattr(transformers, model_cls)(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.2 * torch.randn_like(p))
      else:
        p.copy_(0.1 * torch.randn_like(p))
  return model


def save_hf_model(variant: str, path, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
  """Makes a tiny model, writes it with transformers' own save_pretrained and returns it."""
  model = make_hf_model(variant, seed, **overrides)
  model.save_pretrained(str(path))
  return model


def padding_positions(attention_mask: np.ndarray) -> np.ndarray:
  """Position ids counting only valid tokens (what rlthink uses by default)."""
  return np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)


def hf_logits(model, tokens, attention_mask=None) -> np.ndarray:
  """float32[B, T, V] logits of the PyTorch model; with a mask, positions skip the padding."""
  kwargs = {}
  if attention_mask is not None:
    mask = np.asarray(attention_mask, np.int64)
    kwargs = dict(attention_mask=torch.from_numpy(mask),
                  position_ids=torch.from_numpy(padding_positions(mask)))
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(np.asarray(tokens, np.int64)), **kwargs)
  return out.logits.float().numpy()


def max_rel_err(actual, expected, mask=None) -> float:
  """max |actual - expected| / max |expected| over the positions where `mask` [B, T] is True."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  if mask is not None:
    mask = np.asarray(mask, bool)
    actual, expected = actual[mask], expected[mask]
  return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
