"""Grain pipelines: SFT batches (padded and packed) and RL prompt batches."""

import jax
import numpy as np
import pytest

from rlthink.models import decoder
from rlthink.models.presets import get_preset
from rlthink.models.tokenizer import builtin_tokenizer
from rlthink import tasks
from rlthink.tasks import pipeline

MAX_LEN = 128


@pytest.fixture(scope="module")
def tok():
  return builtin_tokenizer()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return tasks.get("arithmetic", size="tiny", num_train=40, num_test=10,
                   data_dir=str(tmp_path_factory.mktemp("data")))


def _decode(tok, ids):
  return tok.decode(list(ids))


def _sequences(batches, tok):
  """Every packed or padded sequence as (text, loss-target text, thinking text, answer text)."""
  out = []
  for batch in batches:
    for row in range(batch["tokens"].shape[0]):
      for segment in sorted(set(batch["segment_ids"][row].tolist()) - {0}):
        at = batch["segment_ids"][row] == segment
        assert (batch["positions"][row][at] == np.arange(at.sum())).all()
        assert not batch["loss_mask"][row][at][0]  # a sequence's first token is never a target
        pick = lambda key: _decode(tok, batch["tokens"][row][at & batch[key][row]])
        out.append((_decode(tok, batch["tokens"][row][at]), pick("loss_mask"),
                    pick("thinking_mask"), pick("answer_mask")))
  return out


def _expected(task, tok, example):
  thinking = f"<think>{task.thinking(example)}</think>"
  return (f"<bos>{task.prompt(example)}{thinking}{example['answer']}<eos>",
          f"{thinking}{example['answer']}<eos>", thinking, f"{example['answer']}<eos>")


def test_encode_sft_spans(task, tok):
  example = task.examples("train")[0]
  enc = pipeline.encode_sft(task, example, tok)
  assert enc["tokens"].dtype == np.int32 and enc["tokens"][0] == tok.bos_token_id
  assert (enc["loss_mask"] == (enc["thinking_mask"] | enc["answer_mask"])).all()
  assert not (enc["thinking_mask"] & enc["answer_mask"]).any()
  got = (_decode(tok, enc["tokens"]),) + tuple(
      _decode(tok, enc["tokens"][enc[k]]) for k in ("loss_mask", "thinking_mask", "answer_mask"))
  assert got == _expected(task, tok, example)


@pytest.mark.parametrize("packing", [False, True])
def test_sft_batches_cover_the_split_once(task, tok, packing):
  ds = pipeline.sft_dataset(task, "train", tok, batch_size=4, max_length=MAX_LEN, packing=packing,
                            drop_remainder=False)
  batches = list(ds)
  for batch in batches:
    assert batch["tokens"].shape[1] == MAX_LEN and batch["tokens"].dtype == np.int32
    assert (batch["attention_mask"] == (batch["segment_ids"] > 0)).all()
    assert (batch["loss_mask"] == (batch["thinking_mask"] | batch["answer_mask"])).all()
    assert (batch["tokens"][batch["segment_ids"] == 0] == tok.pad_token_id).all()
  got = sorted(_sequences(batches, tok))
  assert got == sorted(_expected(task, tok, e) for e in task.examples("train"))
  rows = sum(b["tokens"].shape[0] for b in batches)
  assert rows < 40 if packing else rows == 40  # packing puts several sequences in a row


def test_packed_forward_matches_separate_forward(task, tok):
  config = get_preset("tiny", vocab_size=128, num_layers=1)
  shapes, _ = decoder.abstract_params(config)  # random weights without the slower init
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  batch = next(iter(pipeline.sft_dataset(task, "train", tok, batch_size=2, max_length=MAX_LEN,
                                         packing=True, shuffle=False)))
  packed = jax.jit(lambda p, t, pos, seg: decoder.forward(
      config, p, t, positions=pos, segment_ids=seg)[0]["logits"])(
          params, batch["tokens"], batch["positions"], batch["segment_ids"])
  # Each sequence alone, right-padded (causal attention: padding after it changes nothing).
  spans = [(row, np.flatnonzero(batch["segment_ids"][row] == segment))
           for row in range(2) for segment in set(batch["segment_ids"][row].tolist()) - {0}]
  alone_tokens = np.zeros((len(spans), MAX_LEN), np.int32)
  for i, (row, at) in enumerate(spans):
    alone_tokens[i, :len(at)] = batch["tokens"][row, at]
  alone = jax.jit(lambda p, t, m: decoder.forward(config, p, t, attention_mask=m)[0]["logits"])(
      params, alone_tokens, alone_tokens != 0)
  assert len(spans) > 2
  for i, (row, at) in enumerate(spans):
    np.testing.assert_allclose(packed[row, at], alone[i, :len(at)], atol=2e-4)


def test_order_is_seeded_and_epochs_reshuffle(task, tok):
  def first_tokens(seed, epochs=1):
    ds = pipeline.sft_dataset(task, "train", tok, batch_size=5, max_length=MAX_LEN, seed=seed,
                              num_epochs=epochs)
    return [b["tokens"] for b in ds]

  a, b, c = first_tokens(0), first_tokens(0), first_tokens(1)
  assert all((x == y).all() for x, y in zip(a, b)) and len(a) == 8
  assert any((x != y).any() for x, y in zip(a, c))
  two = first_tokens(0, epochs=2)
  assert len(two) == 16 and any((x != y).any() for x, y in zip(two[:8], two[8:]))


def test_overlong_policies(task, tok):
  kwargs = dict(batch_size=40, max_length=70, drop_remainder=False, shuffle=False)
  lengths = [len(pipeline.encode_sft(task, e, tok)["tokens"]) for e in task.examples("train")]
  long = sum(n > 70 for n in lengths)
  assert 0 < long < 40
  kept = next(iter(pipeline.sft_dataset(task, "train", tok, overlong="drop", **kwargs)))
  assert kept["tokens"].shape == (40 - long, 70)
  cut = next(iter(pipeline.sft_dataset(task, "train", tok, overlong="truncate", **kwargs)))
  assert cut["tokens"].shape == (40, 70) and cut["segment_ids"].sum() == sum(min(n, 70)
                                                                             for n in lengths)
  with pytest.raises(ValueError, match="tokens > max_length=70"):
    list(pipeline.sft_dataset(task, "train", tok, overlong="error", **kwargs))
  with pytest.raises(ValueError, match="overlong='cut'"):
    pipeline.sft_dataset(task, "train", tok, overlong="cut", **kwargs)


def test_sft_on_given_examples(task, tok):
  chosen = [task.examples("train")[i] for i in (3, 1)]
  batch = next(iter(pipeline.sft_dataset(task, "train", tok, batch_size=2, max_length=MAX_LEN,
                                         examples=chosen, shuffle=False)))
  assert [s[0] for s in _sequences([batch], tok)] == [_expected(task, tok, e)[0] for e in chosen]


def test_prompt_batches(task, tok):
  ds = pipeline.prompt_dataset(task, "test", tok, batch_size=4, max_prompt_length=96, seed=3)
  batches = list(ds)
  assert [b["tokens"].shape for b in batches] == [(4, 96), (4, 96), (2, 96)]
  seen = []
  for batch in batches:
    for row, example in enumerate(batch["examples"]):
      n = batch["lengths"][row]
      assert example == task.examples("test")[batch["index"][row]]
      assert _decode(tok, batch["tokens"][row, 96 - n:]) == "<bos>" + task.prompt(example)
      assert (batch["tokens"][row, :96 - n] == tok.pad_token_id).all()
      assert batch["attention_mask"][row].sum() == n and batch["attention_mask"][row, -1]
      seen.append(int(batch["index"][row]))
  assert sorted(seen) == list(range(10)) and seen != list(range(10))
  with pytest.raises(ValueError, match="tokens > max_prompt_length=20"):
    list(pipeline.prompt_dataset(task, "test", tok, batch_size=4, max_prompt_length=20))
  assert list(pipeline.prompt_dataset(task, "test", tok, batch_size=4, max_prompt_length=20,
                                      overlong="drop")) == []


def test_shards_partition_the_split(task, tok):
  index = lambda shard: [int(i) for b in pipeline.prompt_dataset(
      task, "test", tok, batch_size=10, max_prompt_length=96, shard_index=shard, num_shards=2)
      for i in b["index"]]
  a, b = index(0), index(1)
  assert sorted(a + b) == list(range(10)) and len(a) == 5


@pytest.mark.parametrize("opened", [False, True])
def test_sft_lengths_match_encode_sft(tmp_path, tok, opened):
  from rlthink.models.tokenizer import train_bpe_tokenizer
  from rlthink.tasks.base import PromptFormat
  qa = tasks.get("general_qa", size="tiny", seed=0, data_dir=str(tmp_path),
                 prompt_format=PromptFormat(open_thinking_in_prompt=opened))
  examples = [qa.examples("train")[i] for i in range(30)]
  bpe = train_bpe_tokenizer((qa.reference(e) for e in examples), vocab_size=400)
  for tokenizer in (tok, bpe):
    for add_bos in (None, False):
      expected = [len(pipeline.encode_sft(qa, e, tokenizer, add_bos)["tokens"]) for e in examples]
      got = pipeline.sft_lengths(qa, examples, tokenizer, add_bos, chunk=7)
      assert got.tolist() == expected


def test_truncation_stats_count_what_sft_would_drop(task, tok, caplog):
  lengths = np.asarray([len(pipeline.encode_sft(task, e, tok)["tokens"])
                        for e in task.examples("train")])
  limit = int(np.median(lengths))
  stats = pipeline.truncation_stats(task, tok, limit)
  assert stats == {"num": 40, "truncated": int((lengths > limit).sum()),
                   "max_tokens": int(lengths.max()), "p99_tokens": float(np.percentile(lengths, 99)),
                   "max_length": limit}
  # The same count as the sequences the SFT pipeline drops with overlong="drop".
  kept = sum(b["tokens"].shape[0] for b in pipeline.sft_dataset(
      task, "train", tok, batch_size=8, max_length=limit, overlong="drop", drop_remainder=False))
  assert 0 < stats["truncated"] == 40 - kept
  # A stage's own examples, and an evenly spaced subset.
  chosen = [task.examples("train")[i] for i in range(5)]
  assert pipeline.truncation_stats(task, tok, limit, examples=chosen)["truncated"] == int(
      (lengths[:5] > limit).sum())
  assert pipeline.truncation_stats(task, tok, limit, max_examples=10)["num"] == 10
  # Under half cut: a warning naming the count; over half: an error with the numbers.
  with caplog.at_level("WARNING"):
    assert pipeline.check_truncation(stats, where="stage 'sft'") == stats
  assert f"stage 'sft': {stats['truncated']} of 40 sequences" in caplog.text
  short = pipeline.truncation_stats(task, tok, int(lengths.min()))
  with pytest.raises(ValueError, match=rf"stage 'sft': {short['truncated']} of 40 sequences "
                                       rf"\(\d+\.\d%\) are longer than max_length="
                                       rf"{int(lengths.min())} \(longest {lengths.max()} tokens"):
    pipeline.check_truncation(short, where="stage 'sft'")
  fits = pipeline.truncation_stats(task, tok, int(lengths.max()))
  caplog.clear()
  assert fits["truncated"] == 0 and pipeline.check_truncation(fits) == fits
  assert "sequences" not in caplog.text
