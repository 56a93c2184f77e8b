"""Split mixtures: counts, weights, determinism, and what an SFT stage's batches contain."""

import collections

import numpy as np
import pytest

from rlthink.experiment.mixture import counts, materialize
from rlthink.experiment.spec import parse_mixture


class _Task:
  """Splits of distinct ids: a:0..9, b:100..139."""
  splits = ("a", "b")

  def examples(self, split):
    return [{"id": f"{split}{i}"} for i in range(10 if split == "a" else 40)]


def test_counts_weights_and_whole_splits():
  sizes = {"a": 10, "b": 40}
  assert counts(parse_mixture(["a", "b"], None, "x"), sizes) == {"a": 10, "b": 40}
  assert counts(parse_mixture({"a": 25, "b": 5}, None, "x"), sizes) == {"a": 25, "b": 5}
  # weights share the mixture size (default: the splits' sizes summed) exactly
  assert counts(parse_mixture({"a": 0.5, "b": 0.5}, None, "x"), sizes) == {"a": 25, "b": 25}
  assert counts(parse_mixture({"a": 1.0, "b": 2.0}, 100, "x"), sizes) == {"a": 33, "b": 67}


def test_materialize_is_deterministic_and_upsamples_evenly():
  mixture = parse_mixture({"a": 25, "b": 5}, None, "x")
  examples, sources = materialize(_Task(), mixture, seed=3)
  again, _ = materialize(_Task(), mixture, seed=3)
  other, _ = materialize(_Task(), mixture, seed=4)
  ids = [e["id"] for e in examples]
  assert ids == [e["id"] for e in again] and ids != [e["id"] for e in other]
  assert collections.Counter(sources) == {"a": 25, "b": 5}
  per_id = collections.Counter(i for i in ids if i.startswith("a"))
  assert sorted(set(per_id.values())) == [2, 3]  # 25 of 10: every example twice, 5 three times
  assert len({i for i in ids if i.startswith("b")}) == 5  # a subset without repeats
  assert all(e["id"].startswith(s) for e, s in zip(examples, sources))


@pytest.mark.slow
def test_sft_batches_over_an_epoch_hold_the_configured_proportion(tmp_path):
  from rlthink import tasks
  from rlthink.models.tokenizer import builtin_tokenizer
  from rlthink.tasks.pipeline import sft_dataset

  task = tasks.get("arithmetic", size="tiny", seed=0, data_dir=str(tmp_path))
  mixture = parse_mixture({"train": 48, "test": 16}, None, "x")
  tokenizer = builtin_tokenizer()

  def epoch(seed):
    examples, sources = materialize(task, mixture, seed)
    origin = {task.prompt(e) + task.reference(e): s for e, s in zip(examples, sources)}
    data = iter(sft_dataset(task, "train", tokenizer, batch_size=16, max_length=128,
                            seed=seed, num_epochs=1, examples=examples))
    seen = []
    for batch in data:
      for row, mask in zip(batch["tokens"], batch["attention_mask"]):
        seen.append(origin[tokenizer.decode(np.asarray(row)[np.asarray(mask) > 0],
                                            skip_special_tokens=True)])
    return seen

  seen = epoch(0)
  assert collections.Counter(seen) == {"train": 48, "test": 16}  # 3 : 1 over the epoch
  assert seen == epoch(0)
