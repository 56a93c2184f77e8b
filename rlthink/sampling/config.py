"""`SampleConfig`: the sampling options as one gin-bindable dataclass (for the CLI and drivers).

gin fills it at start-up (`SampleConfig.temperature = 0.7` in a gin file); the values are then
passed as plain arguments to `rlthink.sample`, so nothing inside jitted code reads gin.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """Options of `rlthink.sample` / `sample_text`.

  Attributes:
    max_new_tokens: the most tokens sampled per completion.
    temperature: 0 for greedy decoding.
    top_k / top_p: None for no filter.
    num_samples: completions per prompt.
    seed: the sampling seed.
    stop_tokens: ids that end a completion; None uses the model's / tokenizer's eos; () none.
    stop_strings: strings that end a completion (text paths only, applied after decoding).
    max_slots: the most rows decoded at once; fewer than the completions asked for samples them
      with continuous batching (see `rlthink.sample`). None: one static batch.
  """

  max_new_tokens: int = 256
  temperature: float = 1.0
  top_k: int | None = None
  top_p: float | None = None
  num_samples: int = 1
  seed: int = 0
  stop_tokens: tuple[int, ...] | None = None
  stop_strings: tuple[str, ...] = ()
  max_slots: int | None = None

  def __post_init__(self):
    def need(cond, msg):
      if not cond:
        raise ValueError(f"SampleConfig: {msg}")

    need(isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0,
         f"max_new_tokens={self.max_new_tokens!r} must be a positive int")
    need(isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
         and self.temperature >= 0, f"temperature={self.temperature!r} must be a number >= 0")
    need(self.top_k is None or (isinstance(self.top_k, int) and self.top_k > 0),
         f"top_k={self.top_k!r} must be None or a positive int")
    need(self.top_p is None or (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1),
         f"top_p={self.top_p!r} must be None or in (0, 1]")
    need(isinstance(self.num_samples, int) and self.num_samples > 0,
         f"num_samples={self.num_samples!r} must be a positive int")
    need(isinstance(self.seed, int) and 0 <= self.seed < 2 ** 32,
         f"seed={self.seed!r} must be an int in [0, 2**32)")
    if self.stop_tokens is not None:  # gin gives lists; keep the dataclass hashable
      object.__setattr__(self, "stop_tokens", tuple(self.stop_tokens))
    if isinstance(self.stop_strings, str):
      object.__setattr__(self, "stop_strings", (self.stop_strings,))
    object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
    need(all(isinstance(s, str) and s for s in self.stop_strings),
         f"stop_strings={self.stop_strings!r} must be non-empty strings")
    need(self.max_slots is None or (isinstance(self.max_slots, int) and self.max_slots > 0),
         f"max_slots={self.max_slots!r} must be None or a positive int")

  def sample_kwargs(self) -> dict:
    """The keyword arguments of `rlthink.sample` (everything but stop_strings)."""
    return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
            "top_k": self.top_k, "top_p": self.top_p, "num_samples": self.num_samples,
            "seed": self.seed, "stop_tokens": self.stop_tokens, "max_slots": self.max_slots}
