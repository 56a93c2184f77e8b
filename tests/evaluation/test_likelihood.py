"""Multiple choice by likelihood (EvalConfig metric "likelihood") against a brute force over the
model's own log-probs: one unpadded forward per (question, option) of the whole text."""

import jax
import numpy as np
import pytest

import rlthink
from rlthink import tasks
from rlthink.evaluation import EvalConfig, evaluate_examples
from rlthink.evaluation.evaluate import examples_with_predictions
from rlthink.models import tokenizer as tokenizers


@pytest.fixture(scope="module")
def policy():
  tok = tokenizers.builtin_tokenizer()
  return rlthink.init_policy("tiny", seed=3, num_layers=2, hidden_size=32, intermediate_size=64,
                             num_heads=2, num_kv_heads=1, tokenizer=tok,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=tok.bos_token_id)


def _examples(task):
  """A mix of sources, option counts (2, 3, 4) and prompt lengths, straight from the generator."""
  picked = []
  for split in ("test_reversal", "transfer_syllogism", "transfer_rephrasing"):
    by_source = {}
    for ex in task.generate(split):
      by_source.setdefault(ex["source"], ex)
    picked += list(by_source.values())
  return picked


def _brute_force(policy, task, pairs) -> list[float]:
  """log p(answer, <eos> | prompt, "<think></think>") of each (example, answer), from one forward
  of each whole text (tokenized whole; zeros after it change nothing under causal attention)."""
  tok = policy.tokenizer
  texts = [task.prompt(ex) + "<think></think>" + a for ex, a in pairs]
  ids = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]
         for t in texts]
  batch = np.zeros((len(ids), -(-max(map(len, ids)) // 256) * 256), np.int32)  # few shapes
  for row, seq in zip(batch, ids):
    row[:len(seq)] = seq
  logp = np.asarray(jax.nn.log_softmax(policy.logits(batch).astype(np.float32)))
  out = []
  for i, ((_, answer), seq) in enumerate(zip(pairs, ids)):
    n = len(tok.encode(answer, add_special_tokens=False)) + 1  # the answer and <eos>
    out.append(float(sum(logp[i, t - 1, seq[t]] for t in range(len(seq) - n, len(seq)))))
  return out


def test_likelihood_matches_a_brute_force_over_the_log_probs(policy):
  for answer_format in ("multiple_choice", "free"):  # letters; option texts of many lengths
    _check_against_brute_force(policy, answer_format)


def _check_against_brute_force(policy, answer_format):
  task = tasks.get("latent_generalization", size="tiny", answer_format=answer_format)
  examples = _examples(task)
  cfg = EvalConfig(metrics=("likelihood",), breakdown=("source",), batch_size=16)  # 27 rows: 2 chunks
  metrics, rows = examples_with_predictions(policy, task, examples, cfg, split="mixed")
  pairs = [(ex, a) for ex in examples for a in task.option_answers(ex)]
  expected = iter(_brute_force(policy, task, pairs))
  right = []
  for ex, row in zip(examples, rows):
    answers = task.option_answers(ex)
    assert len(answers) == len(ex["options"]) >= 2
    if answer_format == "multiple_choice":
      assert answers == list("ABCD"[:len(ex["options"])])
    else:
      assert answers == ex["options"]
    mine = [next(expected) for _ in answers]
    np.testing.assert_allclose(row["option_logprobs"], mine, rtol=1e-4, atol=1e-3)
    assert row["likelihood_choice"] == int(np.argmax(mine))
    right.append(int(np.argmax(mine)) == ex["answer_index"])
    assert row["greedy"] is None  # no sampling pass ran
  assert metrics["likelihood"] == pytest.approx(np.mean(right))
  sources = {ex["source"] for ex in examples}
  assert set(metrics["breakdown"]["source"]) == sources
  for source, group in metrics["breakdown"]["source"].items():
    mine = [r for ex, r in zip(examples, right) if ex["source"] == source]
    assert group["likelihood"] == pytest.approx(np.mean(mine)) and group["n"] == len(mine)


def test_likelihood_of_examples_without_options_names_them(policy):
  task = tasks.get("latent_generalization", size="tiny", answer_format="multiple_choice")
  document = next(iter(task.generate("documents")))
  with pytest.raises(ValueError, match="documents-000000.*no options"):
    evaluate_examples(policy, task, [document], EvalConfig(metrics=("likelihood",)),
                      split="documents")
  with pytest.raises(ValueError, match="likelihood"):
    EvalConfig(metrics=("likelihood", "likely"))
