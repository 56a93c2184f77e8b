"""What the RL-iteration benchmarks share (`bench grpo`, `bench ei`): a real verifier on the host,
random prompts and a clock that splits an iteration into phases.

The verifier is the arithmetic task's (`rlthink.tasks.arithmetic`) on arithmetic problems, reading
text: completion ids of a random-init model are detokenized by a byte-level BPE tokenizer trained
here on the problems' text (ids outside its vocabulary are taken modulo its size), a stand-in for
the model's own tokenizer (none is available offline). Its cost depends on the length of the text
it reads, not on the answers being right.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from rlthink.models.tokenizer import train_bpe_tokenizer
from rlthink.tasks import arithmetic


@dataclasses.dataclass
class Verifier:
  """verify(rows, group) -> float32[len(rows)]: row r is a completion of problem r // group."""

  task: arithmetic.Arithmetic
  problems: list[dict]
  tokenizer: object

  def __call__(self, rows: Sequence[Sequence[int]], group: int) -> np.ndarray:
    vocab = len(self.tokenizer)
    rewards = np.zeros((len(rows),), np.float32)
    for r, ids in enumerate(rows):
      text = self.tokenizer.decode([int(t) % vocab for t in ids], skip_special_tokens=True)
      rewards[r] = self.task.verify(text, self.problems[(r // group) % len(self.problems)])
    return rewards


def make_verifier(num_problems: int, seed: int = 0) -> Verifier:
  """The arithmetic verifier on `num_problems` tiny problems, with its stand-in tokenizer."""
  rng = np.random.default_rng(seed)
  options = arithmetic.Options(**dict(arithmetic.Arithmetic.sizes["tiny"], size="tiny",
                                      seed=seed))
  problems = []
  while len(problems) < num_problems:
    problem = arithmetic.sample_problem(rng, options)
    if problem is not None:
      problems.append(dict(problem, id=str(len(problems))))
  tokenizer = train_bpe_tokenizer([p["question"] + " " + " ".join(p["steps"]) for p in problems],
                                  vocab_size=512)
  return Verifier(arithmetic.Arithmetic(options), problems, tokenizer)


def random_prompts(vocab: int, count: int, length: int, seed: int = 0) -> np.ndarray:
  """int32[count, length] prompt ids (never 0, often a pad id)."""
  return np.random.default_rng(seed).integers(1, vocab, (count, length), dtype=np.int32)


class PhaseClock:
  """Seconds per phase of one iteration: `lap(name)` ends the phase that began at the previous
  lap (or at construction); `times` maps "<name>_s" to seconds (repeated names add up)."""

  def __init__(self):
    self.times: dict[str, float] = {}
    self._last = time.perf_counter()

  def lap(self, name: str) -> None:
    now = time.perf_counter()
    key = f"{name}_s"
    self.times[key] = self.times.get(key, 0.0) + now - self._last
    self._last = now

  @property
  def total(self) -> float:
    return sum(self.times.values())
