"""rlthink: reinforcement-learning fine-tuning of language models for reasoning, in JAX."""

import importlib

from rlthink.models.config import ModelConfig
from rlthink.policy import Policy, init_policy, load_pretrained

__version__ = "0.1.0"

# Heavier entry points load on first use, so `import rlthink` stays fast.
_LAZY = {
    "sample": ("rlthink.sampling", "sample"),
    "evaluate": ("rlthink.evaluation", "evaluate"),
    "tasks": ("rlthink.tasks", None),
}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'rlthink' has no attribute {name!r}")
  module, attr = _LAZY[name]
  mod = importlib.import_module(module)
  return mod if attr is None else getattr(mod, attr)
