"""Stand-ins shared by the evaluation tests: a sampler that returns chosen completion texts (as
tokens of the real tokenizer), so decoding, the task's verifier, voting and the estimators all
run for real; and an ORM scorer that reads the completion text."""

from __future__ import annotations

import numpy as np

from rlthink.sampling.rollouts import Rollouts
from rlthink.tasks.pipeline import encode_prompt


class FakeSampler:
  """Stands in for `rlthink.sample` (call it) or `rlthink.sampling.sample_async` (`dispatch`):
  returns the planned completions of each prompt.

  prompt_to_texts: {prompt ids tuple: (greedy text, [sampled texts])}; `calls` records each call.
  """

  def __init__(self, tokenizer, prompt_to_texts):
    self.tokenizer, self.prompt_to_texts, self.calls = tokenizer, prompt_to_texts, []

  def __call__(self, policy, prompts, *, max_new_tokens, temperature, top_k, top_p, num_samples,
               seed):
    self.calls.append({"temperature": temperature, "num_samples": num_samples, "seed": seed,
                       "prompts": len(prompts), "top_p": top_p,
                       "prompt_ids": [list(p) for p in prompts]})
    rows, prompt_rows = [], []
    for i, prompt in enumerate(prompts):
      greedy, sampled = self.prompt_to_texts[tuple(prompt)]
      texts = [greedy] if temperature == 0 else sampled[:num_samples]
      assert len(texts) == num_samples
      for text in texts:
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        rows.append(ids[:max_new_tokens])
        prompt_rows.append((i, prompt))
    p = max(len(pr) for _, pr in prompt_rows)
    c = max(len(r) for r in rows)
    n = len(rows)
    prompt_tokens, prompt_mask = np.zeros((n, p), np.int32), np.zeros((n, p), bool)
    completion_tokens, completion_mask = np.zeros((n, c), np.int32), np.zeros((n, c), bool)
    for row, ((_, prompt), ids) in enumerate(zip(prompt_rows, rows)):
      prompt_tokens[row, p - len(prompt):], prompt_mask[row, p - len(prompt):] = prompt, True
      completion_tokens[row, :len(ids)], completion_mask[row, :len(ids)] = ids, True
    lengths = completion_mask.sum(1).astype(np.int32)
    return Rollouts(prompt_tokens, prompt_mask, completion_tokens, completion_mask,
                    np.zeros((n, c), np.float32), np.zeros((n, c), np.float32), lengths,
                    np.ones(n, bool), np.asarray([i for i, _ in prompt_rows], np.int32),
                    np.asarray(lengths.max(), np.int32))

  def dispatch(self, policy, prompts, **options) -> "DoneRollouts":
    """`sample_async`: the call's rollouts, already done."""
    return DoneRollouts(self(policy, prompts, **options))


class DoneRollouts:
  """A `rlthink.sampling.PendingRollouts` whose rollouts are ready."""

  def __init__(self, rollouts: Rollouts):
    self.rollouts = rollouts

  def done(self) -> bool:
    return True

  def result(self) -> Rollouts:
    return self.rollouts


def install_sampler(monkeypatch, task, tokenizer, examples, plan) -> FakeSampler:
  """Replaces the sampler of `rlthink.rollout` (`sample_async`) with a FakeSampler of `plan`
  ({i: (greedy, sampled)} for examples[i])."""
  import rlthink.rollout
  prompt_to_texts = {tuple(int(t) for t in encode_prompt(task, ex, tokenizer)): plan[i]
                     for i, ex in enumerate(examples)}
  fake = FakeSampler(tokenizer, prompt_to_texts)
  monkeypatch.setattr(rlthink.rollout, "sample_async", fake.dispatch)
  return fake


def install_text_scorer(monkeypatch, tokenizer):
  """Replaces the ORM scorer: the "reward model" passed to `evaluate` is a function
  completion text -> probability."""
  import rlthink.rewards.reward_model as reward_model

  def score_rollouts(rm, rollouts, batch_size=64):
    texts = [tokenizer.decode(row[mask].tolist(), skip_special_tokens=True)
             for row, mask in zip(rollouts.completion_tokens, rollouts.completion_mask)]
    return np.asarray([rm(t) for t in texts], np.float32)

  monkeypatch.setattr(reward_model, "score_rollouts", score_rollouts)
