"""Per-example predictions and per-field breakdowns of `evaluate`, recounted by hand from the saved
JSON lines; metric selection (no sampled pass for maj@1 alone), rerank@k with an ORM, RCRL's
conditioned prompts, and `should_evaluate`.

The sampler and the ORM are stand-ins (`eval_fixtures`) with planned completions and scores, so
the expected verdicts are computed here from the plan, apart from rlthink's code.
"""

import dataclasses
import json
import math
import os
import sys
import types
from collections import Counter

import numpy as np
import pytest

import rlthink
from rlthink import tasks
from rlthink.evaluation import (EvalConfig, evaluate, evaluate_with_predictions, should_evaluate,
                                write_predictions)
from rlthink.evaluation.evaluate import answer_key, for_iterations
from rlthink.models import tokenizer as tokenizers

sys.path.insert(0, os.path.dirname(__file__))
from eval_fixtures import install_sampler, install_text_scorer  # noqa: E402

N, K, COUNT = 6, 4, 16
FIELDS = ("shortcut_works", "hops", "attribute")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return tasks.get("general_qa", size="tiny", seed=0, min_hops=1, max_hops=2, num_people=5,
                   data_dir=str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def policy():
  tok = tokenizers.builtin_tokenizer()
  return rlthink.init_policy("tiny", seed=0, num_layers=1, tokenizer=tok,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=tok.bos_token_id)


def _texts(ex):
  """(right, wrong a, wrong b, unparsable) completions of an example."""
  think = f"<think>{ex['thinking']}</think>"
  return think + ex["answer"], think + "wrong one", think + "wrong two", "<think>no idea"


def _plan(examples, seed=0):
  """Random greedy and sampled completions, more often right where the shortcut works."""
  rng = np.random.default_rng(seed)
  plan = {}
  for i, ex in enumerate(examples):
    right = 0.7 if ex["shortcut_works"] else 0.3
    p = [right, (1 - right) * 0.4, (1 - right) * 0.4, (1 - right) * 0.2]
    options = _texts(ex)
    plan[i] = (options[rng.choice(4, p=p)], [options[j] for j in rng.choice(4, size=N, p=p)])
  return plan


def orm(text):
  """The stand-in ORM: a probability from the text alone (ties are frequent: earliest wins)."""
  return (len(text) % 7) / 7


def _expected(ex, greedy, sampled):
  """Verdicts computed from the plan (greedy, count of right samples, maj@K, rerank@K) and the
  majority answer text."""
  right = _texts(ex)[0]
  answer = lambda t: None if t.endswith("no idea") else t.split("</think>")[1]
  votes = [answer(t) for t in sampled[:K]]
  counts = Counter(v for v in votes if v is not None)
  winner = None
  for v in votes:  # first occurrence order: a later answer must have strictly more votes
    if v is not None and (winner is None or counts[v] > counts[winner]):
      winner = v
  scores = [orm(t) for t in sampled[:K]]
  best = scores.index(max(scores))
  verdicts = {"greedy_correct": greedy == right,
              "samples_correct": sum(t == right for t in sampled),
              "maj_correct": winner == ex["answer"], "rerank_correct": sampled[best] == right}
  return verdicts, winner


def _pass_at_k(n, c, k):
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _recount(rows):
  """The metrics of a group of saved records, counted with plain Python."""
  return {"maj@1": sum(r["greedy_correct"] for r in rows) / len(rows),
          f"maj@{K}": sum(r["maj_correct"] for r in rows) / len(rows),
          f"pass@{K}": sum(_pass_at_k(r["n"], r["samples_correct"], K) for r in rows) / len(rows),
          f"rerank@{K}": sum(r["rerank_correct"] for r in rows) / len(rows),
          "sample_accuracy": sum(r["samples_correct"] for r in rows) / (N * len(rows)),
          "n": len(rows)}


def test_breakdown_equals_a_recount_of_the_saved_predictions(task, policy, monkeypatch, tmp_path):
  examples = [task.examples("test")[i] for i in range(COUNT)]
  plan = _plan(examples)
  install_sampler(monkeypatch, task, policy.tokenizer, examples, plan)
  install_text_scorer(monkeypatch, policy.tokenizer)
  cfg = EvalConfig(k=K, n=N, max_examples=COUNT, max_new_tokens=200, breakdown=FIELDS,
                   splits=("test",), metrics=("maj@1", "maj@k", "pass@k", "rerank@k"))
  results, predictions = evaluate_with_predictions(policy, task, cfg, reward_model=orm)
  path = str(tmp_path / "eval" / "stage.predictions.jsonl")
  write_predictions(path, predictions)
  with open(path) as f:
    saved = [json.loads(line) for line in f]
  assert len(saved) == COUNT and {r["split"] for r in saved} == {"test"}
  for row, ex in zip(saved, examples):  # each record against the plan
    assert (row["id"], row["question"], row["answer"]) == (ex["id"], ex["question"], ex["answer"])
    assert all(row[f] == ex[f] for f in FIELDS) and isinstance(row["shortcut_works"], bool)
    greedy, sampled = plan[examples.index(ex)]
    expected, winner = _expected(ex, greedy, sampled)
    assert {key: row[key] for key in expected} == expected, ex["id"]
    # The majority answer is saved as the vote compared it (the task's answer key).
    assert row["maj_answer"] == (None if winner is None else
                                 str(answer_key(task, f"<think></think>{winner}")))
    assert row["greedy"] == greedy and row["n"] == N
  got = results["test"]
  # Whole split and every group: the metrics equal the recount from the file.
  for key, value in _recount(saved).items():
    if key != "n":
      assert got[key] == pytest.approx(value, abs=1e-12), key
  assert got["num_examples"] == COUNT
  assert set(got["breakdown"]) == set(FIELDS)
  for field in FIELDS:
    groups = {}
    for row in saved:
      groups.setdefault(str(row[field]), []).append(row)
    assert set(got["breakdown"][field]) == set(groups), field
    for value, rows in groups.items():
      table = got["breakdown"][field][value]
      for key, expected in _recount(rows).items():
        assert table[key] == pytest.approx(expected, abs=1e-12), (field, value, key)
  assert set(got["breakdown"]["shortcut_works"]) == {"True", "False"}
  assert list(got["breakdown"]["hops"]) == ["1", "2"]
  assert 0 <= got["orm_accuracy"] <= 1
  assert evaluate(policy, task, cfg, reward_model=orm) == results  # the same numbers


def test_maj_at_1_alone_draws_no_samples(task, policy, monkeypatch):
  examples = [task.examples("test")[i] for i in range(4)]
  fake = install_sampler(monkeypatch, task, policy.tokenizer, examples, _plan(examples))
  cfg = EvalConfig(k=96, max_examples=4, max_new_tokens=200, metrics=("maj@1",),
                   breakdown=("hops",), splits=("test",))
  results, predictions = evaluate_with_predictions(policy, task, cfg)
  assert [c["temperature"] for c in fake.calls] == [0.0]  # one greedy pass, nothing at k = 96
  got = results["test"]
  assert "maj@96" not in got and "pass@96" not in got and "sample_accuracy" not in got
  assert set(got) == {"maj@1", "num_examples", "breakdown"}
  rows = predictions["test"]
  assert all(r["n"] == 0 and r["maj_answer"] is None for r in rows)
  assert got["maj@1"] == pytest.approx(np.mean([r["greedy_correct"] for r in rows]))
  assert sum(g["n"] for g in got["breakdown"]["hops"].values()) == 4


def test_rcrl_condition_puts_the_correct_label_in_every_prompt(task, policy, monkeypatch):
  from rlthink.evaluation import conditioned_task
  tok = policy.tokenizer
  examples = [task.examples("test")[i] for i in range(3)]
  for position, config in (("start", None),
                           ("end", types.SimpleNamespace(correct_label="<correct>",
                                                         label_position="end"))):
    view = conditioned_task(task, "rcrl", config)
    fake = install_sampler(monkeypatch, view, tok, examples, _plan(examples))
    results = evaluate(policy, task, EvalConfig(max_examples=3, metrics=("maj@1",),
                                                max_new_tokens=200, condition="rcrl",
                                                splits=("test",)),
                       stage_config=config)
    assert results["test"]["num_examples"] == 3
    for ids, ex in zip(fake.calls[0]["prompt_ids"], examples):
      text = tok.decode(ids, skip_special_tokens=True)
      plain = task.prompt(ex, tok)
      assert text == ("<correct>" + plain if position == "start" else plain + "<correct>")


def test_errors_name_the_setting(task, policy, monkeypatch):
  examples = [task.examples("test")[i] for i in range(2)]
  install_sampler(monkeypatch, task, policy.tokenizer, examples, _plan(examples))
  with pytest.raises(ValueError, match="breakdown names field 'source'.*'test-000000'"):
    evaluate(policy, task, EvalConfig(max_examples=2, metrics=("maj@1",), breakdown=("source",)))
  with pytest.raises(ValueError, match="rerank@k but no reward model.*reward_model_stage"):
    evaluate(policy, task, EvalConfig(k=2, max_examples=2, metrics=("rerank@k",)))
  with pytest.raises(ValueError, match=r"EvalConfig.metrics=\('maj@2',\)"):
    EvalConfig(metrics="maj@2")
  with pytest.raises(ValueError, match="EvalConfig.condition='ppo'"):
    EvalConfig(condition="ppo")
  assert EvalConfig(metrics=["maj@1"], breakdown="hops").breakdown == ("hops",)


def test_should_evaluate_every_n_iterations_and_the_last():
  pick = lambda every: [i for i in range(1, 8) if should_evaluate(EvalConfig(eval_every=every),
                                                                  i, i == 7)]
  assert pick(1) == list(range(1, 8))
  assert pick(3) == [3, 6, 7]
  assert pick(0) == [7]
  with pytest.raises(ValueError, match="eval_every=-1"):
    EvalConfig(eval_every=-1)


def test_iteration_metrics_are_a_choice_of_the_metrics():
  cfg = EvalConfig(metrics=("maj@1", "maj@k", "rerank@k"), iteration_metrics="maj@1")
  assert for_iterations(cfg) == dataclasses.replace(cfg, metrics=("maj@1",),
                                                    iteration_metrics=None)
  assert for_iterations(EvalConfig()) == EvalConfig()  # unset: every metric
  with pytest.raises(ValueError, match=r"iteration_metrics=\('pass@k',\): expected None or a "
                     r"non-empty choice of EvalConfig.metrics=\('maj@1',\)"):
    EvalConfig(metrics=("maj@1",), iteration_metrics=("pass@k",))
