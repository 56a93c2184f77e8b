"""Data positions for resumable drivers: pure functions of (seed, iteration, step), so a resumed
run sees exactly the questions and minibatches the interrupted one would have."""

from __future__ import annotations

import numpy as np


def iteration_indices(num_items: int, iteration: int, count: int, seed: int) -> np.ndarray:
  """int[count]: the items (e.g. training questions) of `iteration`, walking through a fresh
  permutation of range(num_items) per pass (seeded by (seed, pass)), `count` per iteration."""
  if num_items < 1 or count < 1:
    raise ValueError(f"iteration_indices needs num_items >= 1 and count >= 1, got {num_items}, "
                     f"{count}")
  positions = np.arange(iteration * count, (iteration + 1) * count)
  passes, offsets = np.divmod(positions, num_items)
  perms = {int(p): np.random.default_rng([seed, int(p)]).permutation(num_items)
           for p in np.unique(passes)}
  return np.asarray([perms[int(p)][o] for p, o in zip(passes, offsets)], np.int64)


def minibatch_rows(num_rows: int, minibatch_size: int, step: int, seed) -> np.ndarray:
  """int[minibatch_size]: rows of minibatch `step` over epochs of a seeded permutation.

  Epoch e = step // ceil(num_rows / minibatch_size) permutes the rows with seed (*seed, e); a last
  short minibatch is filled from the start of the permutation (fixed shapes, one compile).
  """
  per_epoch = -(-num_rows // minibatch_size)
  epoch, index = divmod(step, per_epoch)
  seed = list(seed) if isinstance(seed, (list, tuple)) else [seed]
  perm = np.resize(np.random.default_rng(seed + [epoch]).permutation(num_rows),
                   per_epoch * minibatch_size)
  return perm[index * minibatch_size:(index + 1) * minibatch_size]
