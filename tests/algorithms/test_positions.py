"""Data positions: pure functions of (seed, iteration, step), counted against brute force."""

import collections

import numpy as np

from rlthink.algorithms import positions


def test_iteration_indices_walk_each_pass_through_every_item_once():
  # 7 items, 3 per iteration: iterations 0..6 cover 3 whole passes.
  seen = np.concatenate([positions.iteration_indices(7, i, 3, seed=5) for i in range(7)])
  for p in range(3):
    assert sorted(seen[7 * p:7 * (p + 1)]) == list(range(7))
  again = np.concatenate([positions.iteration_indices(7, i, 3, seed=5) for i in range(7)])
  np.testing.assert_array_equal(seen, again)  # a resumed run sees the same questions
  assert not np.array_equal(seen, np.concatenate(
      [positions.iteration_indices(7, i, 3, seed=6) for i in range(7)]))


def test_minibatch_rows_cover_each_row_once_per_epoch():
  rows, size = 10, 4  # 3 minibatches per epoch, the last filled from the permutation's start
  for epoch in range(2):
    steps = [positions.minibatch_rows(rows, size, epoch * 3 + s, [1, 2]) for s in range(3)]
    assert all(len(s) == size for s in steps)
    counts = collections.Counter(np.concatenate(steps).tolist())
    assert set(counts) == set(range(rows)) and sum(counts.values()) == 12
    assert sorted(counts.values()) == [1] * 8 + [2] * 2
