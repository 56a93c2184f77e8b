"""In-memory batches of (prompt, completion) token sequences for fine-tuning on sampled data.

`SequenceBatcher(...)(i)` is a pure function of the step i: epoch e = i // steps_per_epoch is a
permutation seeded by (seed, e), so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class SequenceBatcher:
  """Right-padded batches: tokens int32[B, L], attention_mask, loss_mask (completion tokens).

  sequences: (prompt_ids, completion_ids) pairs; a pair longer than `max_length` keeps its prompt
  and is cut at the end. `weights`: optional per-sequence loss weights (e.g. advantages), returned
  as float32[B] "weights".
  """

  def __init__(self, sequences: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int,
               max_length: int, pad_id: int, seed: int = 0,
               weights: Sequence[float] | None = None):
    if not sequences:
      raise ValueError("SequenceBatcher needs at least one sequence")
    if batch_size < 1 or max_length < 2:
      raise ValueError(f"batch_size={batch_size} must be >= 1 and max_length={max_length} >= 2")
    self.sequences = [(list(p), list(c)) for p, c in sequences]
    self.batch_size, self.max_length, self.pad_id, self.seed = batch_size, max_length, pad_id, seed
    self.weights = None if weights is None else np.asarray(weights, np.float32)
    self.steps_per_epoch = max(1, -(-len(self.sequences) // batch_size))

  def _order(self, epoch: int) -> np.ndarray:
    n = len(self.sequences)
    perm = np.random.default_rng([self.seed, epoch]).permutation(n)
    # Fill the last batch of the epoch with the start of the permutation: fixed batch shapes.
    need = self.steps_per_epoch * self.batch_size
    return np.resize(perm, need)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    epoch, index = divmod(step, self.steps_per_epoch)
    rows = self._order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
    b, length = self.batch_size, self.max_length
    tokens = np.full((b, length), self.pad_id, np.int32)
    attention = np.zeros((b, length), bool)
    loss_mask = np.zeros((b, length), bool)
    for r, seq in enumerate(rows):
      prompt, completion = self.sequences[seq]
      ids = (prompt + completion)[:length]
      tokens[r, :len(ids)] = ids
      attention[r, :len(ids)] = True
      loss_mask[r, len(prompt):len(ids)] = True
    batch = {"tokens": tokens, "attention_mask": attention, "loss_mask": loss_mask}
    if self.weights is not None:
      batch["weights"] = self.weights[rows]
    return batch
