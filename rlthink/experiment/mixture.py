"""A stage's split mixture made concrete: the list of training examples, deterministic given the
seed (see `spec.Mixture` for what the amounts mean)."""

from __future__ import annotations

import numpy as np

from rlthink.experiment.spec import Mixture


def counts(mixture: Mixture, sizes: dict[str, int]) -> dict[str, int]:
  """Examples taken from each split: the given counts, each whole split (a plain list), or the
  weights' shares of the mixture size (largest remainders, so they sum to it exactly)."""
  if not mixture.weighted:
    return {split: sizes[split] if amount is None else amount for split, amount in mixture.parts}
  total = mixture.size or sum(sizes[split] for split in mixture.splits)
  weights = np.array([amount for _, amount in mixture.parts], dtype=np.float64)
  exact = total * weights / weights.sum()
  out = np.floor(exact).astype(int)
  for i in np.argsort(-(exact - out), kind="stable")[:total - out.sum()]:
    out[i] += 1
  return dict(zip(mixture.splits, out.tolist()))


def take(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """`count` indices into a split of `size`: whole seeded permutations, then part of one more."""
  if size < 1:
    raise ValueError("cannot draw examples from an empty split")
  passes = -(-count // size)
  return np.concatenate([rng.permutation(size) for _ in range(passes)])[:count]


def materialize(task, mixture: Mixture, seed: int) -> tuple[list[dict], list[str]]:
  """(examples, the split each came from), shuffled together with `seed`."""
  sizes = {split: len(task.examples(split)) for split in mixture.splits}
  examples, sources = [], []
  for i, (split, count) in enumerate(counts(mixture, sizes).items()):
    source = task.examples(split)
    for j in take(count, sizes[split], np.random.default_rng([seed, i])):
      examples.append(source[int(j)])
      sources.append(split)
  order = np.random.default_rng([seed, len(sizes)]).permutation(len(examples))
  return [examples[i] for i in order], [sources[i] for i in order]
