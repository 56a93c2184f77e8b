"""Grain pipelines from a task split to token batches: SFT (padded or packed) and RL prompts.

SFT batches (numpy, every array [batch, max_length]):
  tokens int32        <bos>? prompt, completion, <eos>; pad id after.
  positions int32     RoPE positions, restarting at 0 in each packed sequence.
  segment_ids int32   1, 2, ... per packed sequence (always 1 when not packing), 0 on padding; pass
                      with `positions` to `decoder.forward(..., segment_ids=, positions=)`.
  attention_mask bool segment_ids > 0.
  loss_mask bool      True on target tokens (the completion and <eos>); aligned with `tokens`, so
                      the loss of `ops.next_token_logprobs` (predicting tokens[:, 1:]) uses
                      loss_mask[:, 1:]. A sequence's first token is never a target, so packed
                      sequences never learn across their boundary.
  thinking_mask bool  the thinking span: opening marker (when in the completion), thinking text and
                      closing marker (ending the thinking is a thinking decision); START trains
                      these.
  answer_mask bool    the answer text and <eos>. loss_mask == thinking_mask | answer_mask.
Spans are tokenized piece by piece (prompt, marker, thinking, marker, answer) so their token
boundaries are exact; for BPE tokenizers this can differ slightly from tokenizing the whole text.

Prompt batches (for sampling in RL / evaluation): tokens int32[batch, max_prompt_length] LEFT-padded
(so generation appends at the same slot), attention_mask bool, lengths int32[batch], index int32
(the example's index in the split) and examples (list of the example dicts, for `task.verify`).

Overlong SFT sequences are truncated (or dropped) without a word inside the pipeline, so count
them before a stage starts: `truncation_stats` (cheap: batched tokenization, no batches built)
and `check_truncation` (an error with the numbers when most of the data would be cut, a warning
naming the count otherwise).

SFT and prompt batches are deterministic given `seed`; iterators from `iter(dataset)` can be
checkpointed with grain's `get_state`/`set_state`. On several hosts pass
shard_index=jax.process_index(), num_shards=jax.process_count().
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import grain
import numpy as np

from rlthink.tasks.base import Task

OVERLONG = ("truncate", "drop", "error")
_SPAN_KEYS = ("tokens", "loss_mask", "thinking_mask", "answer_mask")


def _encode(tokenizer, text: str) -> list[int]:
  return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _use_bos(tokenizer, add_bos: bool | None) -> bool:
  if add_bos and tokenizer.bos_token_id is None:
    raise ValueError("add_bos=True but the tokenizer has no bos token")
  return tokenizer.bos_token_id is not None if add_bos is None else add_bos


def encode_prompt(task: Task, example: dict, tokenizer, add_bos: bool | None = None) -> np.ndarray:
  """int32[n]: <bos>? then the prompt (add_bos None: when the tokenizer has a bos token)."""
  ids = [tokenizer.bos_token_id] if _use_bos(tokenizer, add_bos) else []
  return np.asarray(ids + _encode(tokenizer, task.prompt(example, tokenizer)), np.int32)


def encode_sft(task: Task, example: dict, tokenizer,
               add_bos: bool | None = None) -> dict[str, np.ndarray]:
  """One SFT sequence: tokens int32[n] and the loss/thinking/answer masks bool[n] (module doc);
  the completion is the task's `demonstration` of the example."""
  if tokenizer.eos_token_id is None:
    raise ValueError("SFT sequences end with <eos>, but the tokenizer has no eos token")
  fmt = task.format
  prompt = encode_prompt(task, example, tokenizer, add_bos).tolist()
  opener = [] if fmt.open_thinking_in_prompt else _encode(tokenizer, fmt.think_open)
  shown_thinking, shown_answer = task.demonstration(example)
  thinking = opener + _encode(tokenizer, shown_thinking) + _encode(tokenizer, fmt.think_close)
  answer = _encode(tokenizer, shown_answer) + [tokenizer.eos_token_id]
  n_prompt, n_think, n_answer = len(prompt), len(thinking), len(answer)
  span = np.repeat(np.arange(3), [n_prompt, n_think, n_answer])
  return {"tokens": np.asarray(prompt + thinking + answer, np.int32),
          "loss_mask": span > 0, "thinking_mask": span == 1, "answer_mask": span == 2}


def sft_lengths(task: Task, examples: Sequence[dict], tokenizer, add_bos: bool | None = None,
                chunk: int = 1024) -> np.ndarray:
  """int64[len(examples)]: the token count of each example's SFT sequence, exactly as
  `encode_sft` builds it (<bos>?, prompt, thinking span, answer, <eos>), tokenizing the pieces in
  batches (fast tokenizers encode a batch in parallel)."""
  fmt = task.format
  fixed = (int(_use_bos(tokenizer, add_bos)) + 1  # <bos>? and <eos>
           + (0 if fmt.open_thinking_in_prompt else len(_encode(tokenizer, fmt.think_open)))
           + len(_encode(tokenizer, fmt.think_close)))
  count = lambda texts: [len(ids) for ids in tokenizer(
      list(texts), add_special_tokens=False)["input_ids"]]
  lengths = []
  for start in range(0, len(examples), chunk):
    part = [examples[i] for i in range(start, min(start + chunk, len(examples)))]
    shown = [task.demonstration(ex) for ex in part]
    pieces = [count(task.prompt(ex, tokenizer) for ex in part),
              count(thinking for thinking, _ in shown), count(answer for _, answer in shown)]
    lengths += [fixed + sum(n) for n in zip(*pieces)]
  return np.asarray(lengths, np.int64)


def truncation_stats(task: Task, tokenizer, max_length: int, *, split: str = "train",
                     examples: Sequence[dict] | None = None, add_bos: bool | None = None,
                     max_examples: int | None = None) -> dict:
  """How many SFT sequences of `split` (or of `examples`, e.g. a stage's split mixture) are
  longer than `max_length`: {"num", "truncated", "max_tokens", "p99_tokens", "max_length"}.

  max_examples: count an evenly spaced subset of this many examples (None: all), for large
  corpora; "num" is the number counted.
  """
  examples = task.examples(split) if examples is None else examples
  indices = range(len(examples))
  if max_examples is not None and len(examples) > max_examples:
    indices = np.linspace(0, len(examples) - 1, max_examples).round().astype(int).tolist()
  lengths = sft_lengths(task, [examples[i] for i in indices], tokenizer, add_bos)
  if not len(lengths):
    return {"num": 0, "truncated": 0, "max_tokens": 0, "p99_tokens": 0.0,
            "max_length": max_length}
  return {"num": int(len(lengths)), "truncated": int((lengths > max_length).sum()),
          "max_tokens": int(lengths.max()), "p99_tokens": float(np.percentile(lengths, 99)),
          "max_length": int(max_length)}


def check_truncation(stats: dict, max_fraction: float = 0.5, where: str = "SFT data") -> dict:
  """Raises when more than `max_fraction` of the sequences counted by `truncation_stats` exceed
  max_length (the numbers in the message); logs a warning naming the count when some do.
  Returns `stats`. where: what the data is (e.g. "stage 'sft' (task gsm8k, split train)")."""
  num, cut, limit = stats["num"], stats["truncated"], stats["max_length"]
  if not cut:
    return stats
  numbers = (f"{cut} of {num} sequences ({cut / num:.1%}) are longer than max_length={limit} "
             f"(longest {stats['max_tokens']} tokens, 99th percentile {stats['p99_tokens']:.0f})")
  if cut / num > max_fraction:
    raise ValueError(f"{where}: {numbers}: more than {max_fraction:.0%} of the data would be "
                     "cut; raise max_length (or the tokenizer's compression, e.g. a BPE "
                     "tokenizer) or shorten the data")
  logging.warning("%s: %s; they are cut to max_length (overlong policy)", where, numbers)
  return stats


def _check_overlong(overlong: str) -> None:
  if overlong not in OVERLONG:
    raise ValueError(f"overlong={overlong!r}; expected one of {OVERLONG}")


def _fit(features: dict, length: int, max_length: int, overlong: str, example: dict,
         option: str) -> dict | None:
  """Applies the overlong policy: the features unchanged, truncated, None (drop), or an error."""
  if length <= max_length:
    return features
  if overlong == "error":
    raise ValueError(f"example {example.get('id')!r} has {length} tokens > {option}={max_length}"
                     " (raise it, or pass overlong='drop'" +
                     (" or 'truncate')" if option == "max_length" else ")"))
  if overlong == "drop":
    return None
  return {k: v[:max_length] for k, v in features.items()}


def _indices(examples, seed: int, shuffle: bool, num_epochs: int | None, shard_index: int,
             num_shards: int) -> grain.MapDataset:
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
  ds = grain.MapDataset.range(len(examples))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds[shard_index::num_shards]
  return ds.repeat(num_epochs)


def pad_sft_batch(elements: list[dict], max_length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Stacks unpacked SFT sequences (each <= max_length) into right-padded [B, max_length] arrays."""
  batch = {k: np.zeros((len(elements), max_length), np.int32 if k == "tokens" else bool)
           for k in _SPAN_KEYS}
  batch["tokens"][:] = pad_id
  for row, element in enumerate(elements):
    n = len(element["tokens"])
    for k in _SPAN_KEYS:
      batch[k][row, :n] = element[k]
  segment_ids = (np.arange(max_length)[None, :] < np.asarray(
      [len(e["tokens"]) for e in elements])[:, None]).astype(np.int32)
  positions = np.arange(max_length, dtype=np.int32)[None, :] * segment_ids
  return dict(batch, positions=positions, segment_ids=segment_ids,
              attention_mask=segment_ids > 0)


def _unpack_names(packed: dict) -> dict[str, np.ndarray]:
  """Grain's packed features ("tokens_segment_ids"...) to the SFT batch names."""
  out = {k: packed[k] for k in _SPAN_KEYS}
  out["segment_ids"] = packed["tokens_segment_ids"].astype(np.int32)
  out["positions"] = packed["tokens_positions"].astype(np.int32)
  out["attention_mask"] = out["segment_ids"] > 0
  return out


def sft_dataset(task: Task, split: str, tokenizer, *, batch_size: int, max_length: int,
                packing: bool = False, seed: int = 0, shuffle: bool = True,
                num_epochs: int | None = 1, drop_remainder: bool = True,
                overlong: str = "truncate", num_packing_bins: int | None = None,
                add_bos: bool | None = None, shard_index: int = 0, num_shards: int = 1,
                examples: Any = None) -> grain.IterDataset:
  """SFT batches of `task`'s `split` (see the module doc for the arrays).

  packing: first-fit packing of several sequences per row (grain's FirstFitPackIterDataset with
    `num_packing_bins`, default batch_size); otherwise one sequence per row, right-padded.
  num_epochs: passes over the split (None: forever); each pass is reshuffled.
  overlong: sequences longer than max_length are "truncate"d, "drop"ped, or an "error".
  examples: a sequence of examples to use instead of `task.examples(split)` (e.g. filtered samples
    in Expert Iteration), formatted by the same task.
  """
  _check_overlong(overlong)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  examples = task.examples(split) if examples is None else examples

  def encode(index: int) -> dict | None:
    example = examples[index]
    features = encode_sft(task, example, tokenizer, add_bos)
    return _fit(features, len(features["tokens"]), max_length, overlong, example, "max_length")

  ds = _indices(examples, seed, shuffle, num_epochs, shard_index, num_shards).map(encode)
  ds = ds.to_iter_dataset().filter(lambda x: x is not None)
  if not packing:
    return ds.batch(batch_size, drop_remainder=drop_remainder,
                    batch_fn=lambda els: pad_sft_batch(list(els), max_length, pad_id))
  lengths = {k: max_length for k in _SPAN_KEYS}
  padding = {k: (pad_id if k == "tokens" else False) for k in _SPAN_KEYS}
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=lengths, num_packing_bins=num_packing_bins or batch_size, seed=seed,
      shuffle_bins=shuffle, padding_struct=padding)
  return ds.map(_unpack_names).batch(batch_size, drop_remainder=drop_remainder)


def pad_prompt_batch(elements: list[dict], max_prompt_length: int,
                     pad_id: int) -> dict[str, Any]:
  """Left-pads prompts into tokens int32[B, P] with attention_mask, lengths, index, examples."""
  tokens = np.full((len(elements), max_prompt_length), pad_id, np.int32)
  lengths = np.asarray([len(e["tokens"]) for e in elements], np.int32)
  for row, element in enumerate(elements):
    if lengths[row]:
      tokens[row, -lengths[row]:] = element["tokens"]
  mask = np.arange(max_prompt_length)[None, :] >= (max_prompt_length - lengths)[:, None]
  return {"tokens": tokens, "attention_mask": mask, "lengths": lengths,
          "index": np.asarray([e["index"] for e in elements], np.int32),
          "examples": [e["example"] for e in elements]}


def prompt_dataset(task: Task, split: str, tokenizer, *, batch_size: int, max_prompt_length: int,
                   seed: int = 0, shuffle: bool = True, num_epochs: int | None = 1,
                   drop_remainder: bool = False, overlong: str = "error",
                   add_bos: bool | None = None, shard_index: int = 0,
                   num_shards: int = 1) -> grain.IterDataset:
  """Batches of left-padded prompts of `task`'s `split` with their examples (module doc).

  overlong: a prompt longer than max_prompt_length is an "error" or "drop"ped (never truncated:
  a cut question is a different question).
  """
  if overlong not in ("drop", "error"):
    raise ValueError(f"overlong={overlong!r}; prompts accept 'drop' or 'error'")
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  examples = task.examples(split)

  def encode(index: int) -> dict | None:
    example = examples[index]
    tokens = encode_prompt(task, example, tokenizer, add_bos)
    kept = _fit({"tokens": tokens}, len(tokens), max_prompt_length, overlong, example,
                "max_prompt_length")
    return None if kept is None else {"tokens": tokens, "index": index, "example": example}

  ds = _indices(examples, seed, shuffle, num_epochs, shard_index, num_shards).map(encode)
  ds = ds.to_iter_dataset().filter(lambda x: x is not None)
  return ds.batch(batch_size, drop_remainder=drop_remainder,
                  batch_fn=lambda els: pad_prompt_batch(list(els), max_prompt_length, pad_id))
