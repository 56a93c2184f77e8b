"""Dense rewards: text-to-token alignment, steps, step matching, placement in the token frame."""

import os
import sys

import numpy as np
import pytest

from rlthink import tasks
from rlthink.models import tokenizer as tokenizers
from rlthink.rewards import dense, sources
from rlthink.rewards.reward_model import RewardModel
from rlthink.sampling.rollouts import ScoredRollouts
from rlthink.tasks.base import PromptFormat
from rlthink.tasks.pipeline import encode_prompt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "algorithms"))
import rl_fixtures  # noqa: E402  (the shared test helpers of the RL tests)


@pytest.fixture(scope="module")
def tok():
  return tokenizers.builtin_tokenizer()


@pytest.fixture(scope="module")
def bpe():
  """Byte-level BPE with no marker tokens: "</think>" is several pieces."""
  corpus = ["<think>3+4=7\n7-2=5</think>5", "Ava's friend is Ben. Ben lives in Oslo.",
            "héllo wörld ünïcode 12+30=42"] * 20
  return tokenizers.train_bpe_tokenizer(corpus, vocab_size=300,
                                        special_tokens=tokenizers.SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def arithmetic():
  task = tasks.get("arithmetic", size="tiny", seed=0)
  return task, [ex for _, ex in zip(range(6), task.generate("train"))]


@pytest.mark.parametrize("which", ["tok", "bpe"])
def test_token_char_ends_match_prefix_decodes(which, request):
  tokenizer = request.getfixturevalue(which)
  text = "<think>12+30=42\nhéllo</think>42"
  ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
  ends = dense.token_char_ends(tokenizer, ids)
  brute = [len(tokenizer.decode(ids[:j + 1], skip_special_tokens=True)) for j in range(len(ids))]
  np.testing.assert_array_equal(ends, brute)
  decoded = tokenizer.decode(ids, skip_special_tokens=True)  # the built-in one drops "é" (<unk>)
  assert ends[-1] == ends[-2] == len(decoded)  # eos adds no text
  close_end = decoded.rfind("</think>") + len("</think>")
  j = dense.token_at_char(ends, close_end)
  assert tokenizer.decode(ids[:j + 1]).endswith("</think>")
  assert not tokenizer.decode(ids[:j]).endswith("</think>")


def test_steps_of_arithmetic_and_text_completions():
  fmt = PromptFormat()
  text = "<think>3+4=7\n 7-2=5\n\n</think>5"
  spans = dense.completion_steps(text, fmt)
  assert [text[a:b] for a, b in spans] == ["3+4=7", "7-2=5"]
  qa = "<think>Ava's friend is Ben. Ben lives in Oslo.</think>Oslo"
  assert [qa[a:b] for a, b in dense.completion_steps(qa, fmt)] == [
      "Ava's friend is Ben.", "Ben lives in Oslo."]
  assert dense.thinking_bounds("5+1=6</think>6", fmt) == (0, 5, True)  # no opener
  assert dense.thinking_bounds("<think>5+1=6", fmt) == (7, 12, False)  # unclosed: to the end
  opened = PromptFormat(open_thinking_in_prompt=True)
  assert dense.thinking_bounds("2.5+1=3.5</think>3.5", opened) == (0, 9, True)
  assert [t for t in dense.split_steps("2.5+1=3.5")] == [(0, 9)]  # decimals are no sentence end


def test_match_steps_prefix_and_any():
  refs = ["3+4=7", "7-2=5"]
  assert dense.match_steps(["3 + 4 = 7", "7-2=5"], refs) == [True, True]  # canonical equations
  assert dense.match_steps(["3+4=8", "7-2=5"], refs, "prefix") == [False, False]
  assert dense.match_steps(["3+4=8", "7-2=5"], refs, "any") == [False, True]
  assert dense.match_steps(["7-2=5", "3+4=7", "3+4=7"], refs, "any") == [True, True, False]
  assert dense.match_steps(["3+4=7", "7-2=5", "5+0=5"], refs) == [True, True, False]
  assert dense.match_steps(["Ben lives in  OSLO"], ["Ben lives in Oslo."]) == [True]
  with pytest.raises(ValueError, match="'all'"):
    dense.match_steps([], refs, "all")


def test_thinking_matches_reference():
  fmt = PromptFormat()
  assert dense.thinking_matches("<think>3+4=7\n7-2=5</think>9", ["3+4=7", "7-2=5"], fmt)
  assert not dense.thinking_matches("<think>3+4=7</think>5", ["3+4=7", "7-2=5"], fmt)
  assert not dense.thinking_matches("<think>3+4=7\n7-2=4</think>4", ["3+4=7", "7-2=5"], fmt)


def _scored(task, examples, tok, completions):
  pairs = [(encode_prompt(task, ex, tok).tolist(),
            tok.encode(c, add_special_tokens=False) + [tok.eos_token_id])
           for ex, c in zip(examples, completions)]
  return ScoredRollouts(list(examples), 1, list(completions),
                        np.asarray([task.verify(c, ex) for ex, c in zip(examples, completions)],
                                   np.float32), rl_fixtures.make_rollouts(pairs))


def test_step_match_rewards_on_the_tokens_that_end_steps(arithmetic, tok):
  task, examples = arithmetic
  two = [ex for ex in examples if len(ex["steps"]) == 2][0]
  one = [ex for ex in examples if len(ex["steps"]) == 1][0]
  wrong = two["steps"][0].rsplit("=", 1)[0] + "=99"
  completions = [task.reference(two), task.reference(one),
                 f"<think>{wrong}\n{two['steps'][1]}</think>{two['answer']}"]
  scored = _scored(task, [two, one, two], tok, completions)
  rewards = dense.step_match_rewards(task, scored, tok, coef=1.0)
  ro = scored.rollouts
  p = ro.prompt_tokens.shape[1]
  assert rewards.shape == (3, p + ro.completion_tokens.shape[1] - 1)
  # Row 0: each of the two steps earns 1/2 on the token that completes it.
  text = completions[0]
  for step in two["steps"]:
    j = len(tok.encode(text[:text.index(step) + len(step)], add_special_tokens=False)) - 1
    assert rewards[0, p - 1 + j] == pytest.approx(0.5)
  assert rewards[0].sum() == pytest.approx(1.0)
  assert rewards[1].sum() == pytest.approx(1.0) and np.count_nonzero(rewards[1]) == 1
  assert rewards[2].sum() == 0.0  # prefix matching: nothing counts after a wrong first step
  unnormalized = dense.step_match_rewards(task, scored, tok, coef=2.0, normalize=False,
                                          mode="any")
  assert unnormalized[2].sum() == pytest.approx(2.0)  # the second step still matches


def test_prm_rewards_are_coef_times_probability_minus_baseline(arithmetic, tok):
  import jax.numpy as jnp
  import rlthink
  task, examples = arithmetic
  policy = rlthink.init_policy("tiny", seed=0, num_layers=1, vocab_size=128, max_seq_len=128)
  from rlthink.rewards.reward_model import add_reward_head
  params = add_reward_head(policy.params, policy.config)
  params["reward_bias"] = jnp.asarray(1.5, jnp.float32)  # zero head + bias: p = sigmoid(1.5)
  rm = RewardModel(policy.config, params, "process")
  scored = _scored(task, examples[:2], tok, [task.reference(ex) for ex in examples[:2]])
  rewards = sources.prm_rewards(rm, task, scored, tok, coef=2.0, baseline=0.5)
  expected = 2.0 * (1 / (1 + np.exp(-1.5)) - 0.5)
  for row, ex in enumerate(examples[:2]):
    nonzero = rewards[row][rewards[row] != 0]
    np.testing.assert_allclose(nonzero, expected, rtol=1e-5)
    assert len(nonzero) == len(ex["steps"])


def test_place_rewards_checks_the_row_length(tok):
  ro = rl_fixtures.make_rollouts([([1, 9], [5, 6, 2])])
  out = dense.place_rewards(ro, [[(0, 1.0), (2, 0.5), (2, 0.25)]])
  np.testing.assert_allclose(out[0], [0, 1.0, 0, 0.75])
  with pytest.raises(ValueError, match="completion token 3"):
    dense.place_rewards(ro, [[(3, 1.0)]])


def test_returns_to_go_matches_a_loop():
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=(4, 9)).astype(np.float32)
  mask = rng.random((4, 9)) < 0.7
  out = dense.returns_to_go(rewards, mask)
  for b in range(4):
    for t in range(9):
      want = sum(rewards[b, u] for u in range(t, 9) if mask[b, u]) if mask[b, t] else 0.0
      assert out[b, t] == pytest.approx(want, abs=1e-5)
