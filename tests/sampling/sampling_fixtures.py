"""Shared pieces of the sampler tests: tiny models (ours and transformers'), reference log-probs,
and a chi-square critical value (numpy only)."""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

import rlthink
from rlthink import ops
from rlthink.models.config import ModelConfig

# A 32-token model whose logits are spread out (std ~2 after scaling the output projection), so
# that temperature, top-k and top-p change the next-token distribution a lot.
PEAKED = ModelConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=4, num_kv_heads=2, max_seq_len=64, tie_embeddings=False)


@functools.lru_cache(maxsize=None)
def peaked_policy(scale: float = 12.0):
  policy = rlthink.init_policy(PEAKED, seed=3)
  params = dict(policy.params, lm_head=policy.params["lm_head"] * scale)
  return policy.replace(params=params)


@functools.lru_cache(maxsize=None)
def tiny_policy(dtype: str = "float32"):
  return rlthink.init_policy("tiny", seed=0, dtype=dtype)


@functools.lru_cache(maxsize=None)
def qwen2_bias_policy():
  """A Qwen2-style model (q/k/v biases, made non-zero: they initialize to zeros; 3 query heads
  per KV head)."""
  config = ModelConfig(architecture="qwen2", qkv_bias=True, vocab_size=128, hidden_size=96,
                       intermediate_size=128, num_layers=2, num_heads=6, num_kv_heads=2,
                       head_dim=16, max_seq_len=64)
  policy = rlthink.init_policy(config, seed=1)
  rng = np.random.default_rng(1)
  attn = dict(policy.params["layers"]["attn"])
  for name in ("q_bias", "k_bias", "v_bias"):
    attn[name] = jnp.asarray(rng.normal(size=attn[name].shape), jnp.float32)
  return policy.replace(params={**policy.params,
                                "layers": {**policy.params["layers"], "attn": attn}})


def ragged_prompts(vocab: int, lengths, seed: int = 0) -> list[list[int]]:
  rng = np.random.RandomState(seed)
  return [rng.randint(0, vocab, n).tolist() for n in lengths]


def full_forward_logits(policy, rollouts) -> np.ndarray:
  """float32[N, C, V]: the logits that predicted each completion token, from one full forward
  pass over the finished sequences (prompt | completion with their mask)."""
  logits = np.asarray(policy.logits(rollouts.tokens, rollouts.mask))
  p = rollouts.prompt_tokens.shape[1]
  return logits[:, p - 1:-1]


def full_forward_logprobs(policy, rollouts) -> np.ndarray:
  """float32[N, C] log-prob of each completion token under one full forward (ops.token_logprobs)."""
  logits = full_forward_logits(policy, rollouts)
  return np.asarray(ops.token_logprobs(jnp.asarray(logits), jnp.asarray(
      rollouts.completion_tokens)))


def allowed_top_k(logits: np.ndarray, k: int) -> np.ndarray:
  """bool[..., V]: the k largest logits."""
  kth = np.sort(logits, axis=-1)[..., -k][..., None]
  return logits >= kth


def allowed_top_p(logits: np.ndarray, p: float) -> np.ndarray:
  """bool[..., V]: the smallest set of most likely tokens whose probability reaches p."""
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1)
  sorted_p = np.take_along_axis(probs, order, -1)
  before = np.cumsum(sorted_p, -1) - sorted_p
  keep_sorted = before < p
  keep_sorted[..., 0] = True
  keep = np.zeros_like(keep_sorted)
  np.put_along_axis(keep, order, keep_sorted, -1)
  return keep


def softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def chi_square(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0):
  """(statistic, degrees of freedom) of observed counts against probabilities; bins expected to
  hold fewer than `min_expected` draws are pooled into one."""
  counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
  expected = probs * counts.sum()
  big = expected >= min_expected
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  keep = exp > 0
  obs, exp = obs[keep], exp[keep]
  return float(np.sum((obs - exp) ** 2 / exp)), int(len(obs) - 1)


def chi_square_critical(df: int, z: float = 3.719) -> float:
  """Upper critical value of chi-square(df) (Wilson-Hilferty); z=3.719 is a 1e-4 tail."""
  a = 2.0 / (9.0 * df)
  return df * (1.0 - a + z * math.sqrt(a)) ** 3


# Tiny random transformers models for the greedy parity tests.
HF_TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
               rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
HF_ARCHS = {"llama": ("LlamaConfig", "LlamaForCausalLM", {}),
            "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True})}


def save_hf_model(arch: str, path: str, seed: int = 0):
  """A random float32 Llama / Qwen2 (norms, biases and weights all random), saved with
  transformers' save_pretrained; returns the PyTorch model (eval mode)."""
  import torch
  import transformers

  config_cls, model_cls, extra = HF_ARCHS[arch]
  config = getattr(transformers, config_cls)(**HF_TINY, **extra)
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
  model.save_pretrained(path)
  return model


def hf_greedy(model, prompts, max_new_tokens: int, eos: int | None, pad: int = 0):
  """transformers' greedy `generate` on left-padded prompts: the new tokens of each row, up to and
  including its first eos."""
  import torch

  width = max(len(p) for p in prompts)
  ids = np.full((len(prompts), width), pad, np.int64)
  mask = np.zeros((len(prompts), width), np.int64)
  for i, p in enumerate(prompts):
    ids[i, width - len(p):] = p
    mask[i, width - len(p):] = 1
  with torch.no_grad():
    out = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                         pad_token_id=pad, num_beams=1)
  rows = []
  for row in out[:, width:].numpy().tolist():
    if eos is not None and eos in row:
      row = row[:row.index(eos) + 1]
    rows.append(row)
  return rows
