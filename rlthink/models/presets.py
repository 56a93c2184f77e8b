"""Named model shapes. Real-model presets carry the published shapes with random init; weights come
from `rlthink.load_pretrained` on a local Hugging Face directory."""

from __future__ import annotations

from rlthink.models.config import ModelConfig

_QWEN2 = dict(architecture="qwen2", qkv_bias=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
              max_seq_len=32768, bos_token_id=151643, eos_token_id=151643)
_LLAMA3 = dict(architecture="llama", rope_theta=500_000.0, rms_norm_eps=1e-5, rope_type="llama3",
               rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
               rope_original_max_position=8192, max_seq_len=131072, vocab_size=128256,
               bos_token_id=128000, eos_token_id=128001)

PRESETS: dict[str, ModelConfig] = {
    # About 0.85M parameters: CPU tests, notebooks and the quickstart.
    "tiny": ModelConfig(architecture="llama", vocab_size=512, hidden_size=128,
                        intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
                        max_seq_len=1024),
    # About 27M parameters (8 layers of width 512, a 4,096-token BPE vocabulary): models trained
    # from scratch on a synthetic task at GPU scale, e.g. experiments/complementary_reasoning.gin.
    "small-27m": ModelConfig(architecture="llama", vocab_size=4096, hidden_size=512,
                             intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4,
                             max_seq_len=2048),
    "qwen2.5-0.5b": ModelConfig(**_QWEN2, vocab_size=151936, hidden_size=896,
                                intermediate_size=4864, num_layers=24, num_heads=14,
                                num_kv_heads=2, tie_embeddings=True),
    "qwen2.5-1.5b": ModelConfig(**_QWEN2, vocab_size=151936, hidden_size=1536,
                                intermediate_size=8960, num_layers=28, num_heads=12,
                                num_kv_heads=2, tie_embeddings=True),
    "qwen2.5-3b": ModelConfig(**_QWEN2, vocab_size=151936, hidden_size=2048,
                              intermediate_size=11008, num_layers=36, num_heads=16,
                              num_kv_heads=2, tie_embeddings=True),
    "qwen2.5-7b": ModelConfig(**_QWEN2, vocab_size=152064, hidden_size=3584,
                              intermediate_size=18944, num_layers=28, num_heads=28,
                              num_kv_heads=4, tie_embeddings=False),
    "qwen3-0.6b": ModelConfig(architecture="qwen3", vocab_size=151936, hidden_size=1024,
                              intermediate_size=3072, num_layers=28, num_heads=16,
                              num_kv_heads=8, head_dim=128, qk_norm=True,
                              rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_embeddings=True,
                              max_seq_len=40960, bos_token_id=151643, eos_token_id=151645),
    "llama3.2-1b": ModelConfig(**_LLAMA3, hidden_size=2048, intermediate_size=8192,
                               num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                               rope_factor=32.0, tie_embeddings=True),
    "llama3.1-8b": ModelConfig(**_LLAMA3, hidden_size=4096, intermediate_size=14336,
                               num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                               rope_factor=8.0, tie_embeddings=False),
}


def get_preset(name: str, **overrides) -> ModelConfig:
  """Returns the preset `name` with `overrides` applied (e.g. dtype="bfloat16")."""
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
