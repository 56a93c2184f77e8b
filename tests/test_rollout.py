"""`rollout_examples`: chunks of prompts dispatched ahead, so the device samples chunk k + 1 while
the host decodes and verifies chunk k, with exactly the rollouts of sampling chunk by chunk."""

import dataclasses

import numpy as np
import pytest

import rlthink
import rlthink.rollout
from rlthink import tasks
from rlthink.models import tokenizer as tokenizers
from rlthink.rollout import rollout_examples
from rlthink.sampling.rollouts import Rollouts, concat_rollouts
from rlthink.sampling.text import decode_completions
from rlthink.tasks.pipeline import encode_prompt

OPTIONS = dict(num_samples=3, max_new_tokens=8, temperature=1.0, seed=7, batch_size=2)


@pytest.fixture(scope="module")
def setup():
  tok = tokenizers.builtin_tokenizer()
  policy = rlthink.init_policy("tiny", seed=0, num_layers=2, vocab_size=128, max_seq_len=128,
                               tokenizer=tok, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
  task = tasks.get("arithmetic", size="tiny", seed=0)
  examples = [ex for _, ex in zip(range(5), task.generate("train"))]  # chunks of 2, 2 and 1
  return policy, task, examples


def test_chunks_give_the_rollouts_of_sampling_them_one_by_one(setup):
  policy, task, examples = setup
  scored = rollout_examples(policy, task, examples, **OPTIONS)
  # The reference: each chunk sampled with seed + chunk index, then decoded and verified.
  prompts = [[int(t) for t in encode_prompt(task, ex, policy.tokenizer)] for ex in examples]
  b, k = OPTIONS["batch_size"], OPTIONS["num_samples"]
  parts = [rlthink.sample(policy, prompts[start:start + b], max_new_tokens=8, temperature=1.0,
                          num_samples=k, seed=7 + chunk)
           for chunk, start in enumerate(range(0, len(prompts), b))]
  rollouts = concat_rollouts(parts)
  texts = decode_completions(policy.tokenizer, rollouts)
  rewards = np.asarray([task.verify(t, examples[i // k]) for i, t in enumerate(texts)],
                       np.float32)
  assert len(parts) == 3 and scored.examples == examples and scored.num_samples == k
  assert scored.texts == texts
  np.testing.assert_array_equal(scored.rewards, rewards)
  assert scored.rewards.dtype == np.float32
  for field in dataclasses.fields(Rollouts):
    np.testing.assert_array_equal(getattr(scored.rollouts, field.name),
                                  getattr(rollouts, field.name), err_msg=field.name)


def test_the_next_chunk_is_dispatched_before_this_one_is_verified(setup, monkeypatch):
  policy, task, examples = setup
  events, real_sample_async, real_verify = [], rlthink.rollout.sample_async, task.verify

  class Logged:  # a PendingRollouts that logs when its rollouts are taken
    def __init__(self, pending, chunk):
      self.pending, self.chunk = pending, chunk

    def result(self):
      events.append(("result", self.chunk))
      return self.pending.result()

  def sample_async(policy, prompts, **options):
    chunk = options["seed"] - OPTIONS["seed"]
    events.append(("dispatch", chunk))
    return Logged(real_sample_async(policy, prompts, **options), chunk)

  def verify(completion, example):
    events.append(("verify", examples.index(example) // OPTIONS["batch_size"]))
    return real_verify(completion, example)

  monkeypatch.setattr(rlthink.rollout, "sample_async", sample_async)
  monkeypatch.setattr(task, "verify", verify)
  rollout_examples(policy, task, examples, **OPTIONS)
  dedup = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
  assert dedup == [("dispatch", 0), ("result", 0), ("dispatch", 1), ("verify", 0),
                   ("result", 1), ("dispatch", 2), ("verify", 1), ("result", 2), ("verify", 2)]
