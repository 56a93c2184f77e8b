"""Text in, text out: prompts through the policy's tokenizer, completions and stop strings back,
and the gin-bound `SampleConfig` that `rlthink sample` reads."""

import dataclasses
import json

import gin
import pytest
import sampling_fixtures as sf

import rlthink
from rlthink import gin_utils
from rlthink.models import tokenizer as tokenizers
from rlthink.sampling import SampleConfig, decode_completions, sample_text

PROMPTS = ["12+30=", "Q: what is 7*6?\nA:"]


@pytest.fixture(scope="module")
def policy():
  tok = tokenizers.builtin_tokenizer()
  return rlthink.init_policy("tiny", seed=1, tokenizer=tok, vocab_size=len(tok))


def test_text_round_trip_and_records(policy):
  config = SampleConfig(max_new_tokens=10, temperature=0.0, num_samples=2, stop_tokens=())
  records = sample_text(policy, PROMPTS, config)
  assert [(r["prompt_index"], r["sample_index"]) for r in records] == [(0, 0), (0, 1), (1, 0),
                                                                       (1, 1)]
  # The records are what the string prompts sample as token ids, decoded by the tokenizer.
  tok = policy.tokenizer
  ro = rlthink.sample(policy, PROMPTS, **config.sample_kwargs())
  assert ro.prompt(0) == tok(PROMPTS[0])["input_ids"]
  texts = decode_completions(tok, ro)
  for r, record in enumerate(records):
    assert record["prompt"] == PROMPTS[r // 2]
    assert record["completion"] == texts[r] == tok.decode(ro.completion(r))
    assert record["finish_reason"] == "length" and record["num_tokens"] == 10
    assert record["logprob"] == pytest.approx(float(ro.logprobs[r].sum()), abs=1e-4)
    json.dumps(record)  # JSON-ready


def test_stop_strings_cut_text_tokens_and_logprobs(policy):
  config = SampleConfig(max_new_tokens=12, temperature=1.0, seed=3, stop_tokens=())
  free = sample_text(policy, PROMPTS[:1], config)[0]["completion"]
  # A two-character string this seed produces for the first time a few characters in.
  start = next(i for i in range(3, len(free) - 2) if free.find(free[i:i + 2]) == i)
  stop = free[start:start + 2]
  record = sample_text(policy, PROMPTS[:1], dataclasses.replace(config, stop_strings=(stop,)))[0]
  assert record["completion"] == free[:free.index(stop) + len(stop)]
  assert record["finish_reason"] == "stop"
  # The tokens are cut after the first one whose text completes the stop string.
  full = rlthink.sample(policy, PROMPTS[:1], **config.sample_kwargs())
  tokens = full.completion(0)
  decoded = [policy.tokenizer.decode(tokens[:n], skip_special_tokens=True)
             for n in range(len(tokens) + 1)]
  assert record["num_tokens"] == next(n for n, text in enumerate(decoded) if stop in text)
  assert record["logprob"] == pytest.approx(
      float(full.logprobs[0, :record["num_tokens"]].sum()), abs=1e-4)


def test_sample_config_is_bound_by_gin_and_checked():
  try:
    gin_utils.parse([], ["SampleConfig.temperature = 0.5", "SampleConfig.stop_tokens = [2, 7]",
                         "SampleConfig.stop_strings = ['</answer>']"])
    config = gin_utils.configured(SampleConfig)
    assert (config.temperature, config.stop_tokens, config.stop_strings) == (
        0.5, (2, 7), ("</answer>",))
    hash(config)  # frozen and hashable, like every config
  finally:
    gin.clear_config()
  with pytest.raises(ValueError, match="top_p"):
    SampleConfig(top_p=1.5)
  with pytest.raises(ValueError, match="max_new_tokens"):
    SampleConfig(max_new_tokens=0)


def test_text_needs_a_tokenizer():
  with pytest.raises(ValueError, match="tokenizer"):
    sample_text(sf.tiny_policy(), PROMPTS)
