"""`Policy`: a model config, its parameters, the mesh they live on and an optional tokenizer.

A small frozen dataclass registered as a pytree (only `params` is a child), so it can be passed
through `jax.jit`. Jitted code itself works on the pure functions of `rlthink.models.decoder`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rlthink import sharding
from rlthink.models import decoder
from rlthink.models.config import ModelConfig
from rlthink.models.presets import get_preset


@functools.partial(jax.jit, static_argnames=("config", "mesh", "heads"))
def _apply(config, params, tokens, attention_mask, mesh, heads):
  outputs, _ = decoder.forward(config, params, tokens, attention_mask=attention_mask,
                               heads=heads, mesh=mesh)
  return outputs


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"],
                   meta_fields=["config", "mesh", "tokenizer"])
@dataclasses.dataclass(frozen=True)
class Policy:
  """A language model ready to score, sample and save.

  Attributes:
    config: the model's `ModelConfig`.
    params: the parameter pytree (sharded on `mesh` when one is given).
    mesh: the (data, fsdp, tensor) mesh or None (default device).
    tokenizer: a Hugging Face tokenizer, or None.
  """

  config: ModelConfig
  params: Any
  mesh: Mesh | None = None
  tokenizer: Any = None

  def replace(self, **changes) -> "Policy":
    return dataclasses.replace(self, **changes)

  def _put_batch(self, x) -> jax.Array:
    x = jnp.asarray(x)
    if self.mesh is None:
      return x
    return jax.device_put(x, sharding.batch_sharding(self.mesh, x.shape))

  def apply(self, tokens, attention_mask=None, heads: Sequence[str] = ("logits",)) -> dict:
    """Runs the jitted forward and returns {head: output}."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [batch, time], got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= self.config.vocab_size):
      raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got "
                       f"[{tokens.min()}, {tokens.max()}]")
    if tokens.shape[1] > self.config.max_seq_len:
      raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_seq_len "
                       f"{self.config.max_seq_len}")
    mask = None if attention_mask is None else self._put_batch(np.asarray(attention_mask, bool))
    return _apply(self.config, self.params, self._put_batch(tokens.astype(np.int32)), mask,
                  self.mesh, tuple(heads))

  def logits(self, tokens, attention_mask=None) -> jax.Array:
    """Next-token logits float32[batch, time, vocab] of int tokens [batch, time]."""
    return self.apply(tokens, attention_mask, ("logits",))["logits"]

  def save_pretrained(self, out_dir: str, overwrite: bool = False,
                      generation_config: dict | None = None) -> None:
    """Writes a Hugging Face directory (config.json, generation_config.json, model.safetensors,
    tokenizer files). A non-empty `out_dir` is refused unless `overwrite` (it must then hold an
    earlier export). generation_config: the source model's, carried over (see
    `hf.save_pretrained`)."""
    from rlthink.models import hf  # heavy: transformers loads only for Hugging Face files
    hf.save_pretrained(self, out_dir, overwrite=overwrite, generation_config=generation_config)


def init_policy(model: str | ModelConfig = "tiny", seed: int = 0, mesh: Mesh | None = None,
                tokenizer: Any = None, **overrides) -> Policy:
  """A randomly initialized policy from a preset name or a `ModelConfig`.

  `overrides` replace config fields (e.g. `dtype="bfloat16"`, `vocab_size=len(tokenizer)`).
  """
  config = get_preset(model, **overrides) if isinstance(model, str) else model.replace(**overrides)
  if tokenizer is not None and len(tokenizer) > config.vocab_size:
    raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                     f"{config.vocab_size}")
  params = decoder.init_params(config, jax.random.key(seed), mesh=mesh)
  return Policy(config=config, params=params, mesh=mesh, tokenizer=tokenizer)


def load_pretrained(path: str, mesh: Mesh | None = None, dtype: str | None = None,
                    **overrides) -> Policy:
  """Loads a local Hugging Face directory (config.json + safetensors [+ tokenizer]) onto `mesh`."""
  from rlthink.models import hf  # heavy: transformers loads only for Hugging Face files
  return hf.load_pretrained(path, mesh=mesh, dtype=dtype, **overrides)
