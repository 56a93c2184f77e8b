"""`rlthink.evaluate` on completions the test controls: maj@1, maj@k, pass@k, the pass@k curve,
and the markdown table / PNG plots of `rlthink.evaluation.report`.

`rlthink.rollout.sample_async` is replaced by a fake that returns chosen completion texts
(`eval_fixtures.FakeSampler`), so decoding, the task's verifier, voting and the estimators all run
for real.
"""

import itertools
import os
import sys

import numpy as np
import pytest

import rlthink
from rlthink import tasks
from rlthink.evaluation import EvalConfig, evaluate, report
from rlthink.models import tokenizer as tokenizers

sys.path.insert(0, os.path.dirname(__file__))
from eval_fixtures import install_sampler  # noqa: E402

N, K = 6, 4


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return tasks.get("arithmetic", size="tiny", seed=0, num_train=8, num_test=5,
                   data_dir=str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def policy():
  tok = tokenizers.builtin_tokenizer()
  return rlthink.init_policy("tiny", seed=0, num_layers=1, tokenizer=tok,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=tok.bos_token_id)


def _right(ex):
  return f"<think>{' '.join(ex['steps'])}</think>{ex['answer']}"


def _wrong(ex, delta):
  return f"<think>{' '.join(ex['steps'])}</think>{int(ex['answer']) + delta}"


UNPARSABLE = "<think>no idea"  # no closed thinking span: no answer, no vote


def _plan(examples):
  """{question: (greedy text, [N sampled texts])} and the expected per-example outcomes."""
  e = examples
  r, w = _right, _wrong
  plan = {
      # first K: right x2, wrong x2 -> a tie, won by the earliest (right) answer.
      0: (r(e[0]), [r(e[0]), w(e[0], 1), w(e[0], 1), r(e[0]), w(e[0], 2), w(e[0], 2)]),
      # first K: wrong x2, right x2 -> tie won by the wrong answer; 4 of 6 right.
      1: (w(e[1], 3), [w(e[1], 1), r(e[1]), w(e[1], 1), r(e[1]), r(e[1]), r(e[1])]),
      # unparsable samples do not vote: the single right answer wins.
      2: (r(e[2]), [UNPARSABLE, UNPARSABLE, UNPARSABLE, r(e[2]), w(e[2], 1), w(e[2], 1)]),
      # nothing right.
      3: (UNPARSABLE, [w(e[3], 1), w(e[3], 2), w(e[3], 3), w(e[3], 1), w(e[3], 2), w(e[3], 2)]),
      # a clear majority among the first K.
      4: (r(e[4]), [r(e[4])] * 4 + [w(e[4], 1)] * 2),
  }
  expected_greedy = [1, 0, 1, 0, 1]
  expected_maj = [1, 0, 1, 0, 1]
  expected_correct = [[t == r(e[i]) for t in plan[i][1]] for i in range(5)]
  return plan, expected_greedy, expected_maj, expected_correct


@pytest.fixture
def planned(task, policy, monkeypatch):
  examples = [task.examples("test")[i] for i in range(5)]
  plan, greedy, maj, correct = _plan(examples)
  fake = install_sampler(monkeypatch, task, policy.tokenizer, examples, plan)
  return examples, plan, greedy, maj, correct, fake


def _brute_force_pass_at_k(correct, k):
  subsets = list(itertools.combinations(range(len(correct)), k))
  return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


def test_evaluate_on_planned_completions(task, policy, planned):
  examples, plan, greedy, maj, correct, fake = planned
  cfg = EvalConfig(k=K, n=N, temperature=0.7, seed=11, max_new_tokens=40, batch_size=2)
  results = evaluate(policy, task, cfg)
  assert list(results) == ["test"]  # every split but train
  got = results["test"]
  assert got["num_examples"] == 5
  assert got["maj@1"] == pytest.approx(np.mean(greedy))  # greedy accuracy
  assert got[f"maj@{K}"] == pytest.approx(np.mean(maj))
  assert got[f"pass@{K}"] == pytest.approx(np.mean([_brute_force_pass_at_k(c, K)
                                                    for c in correct]), abs=1e-12)
  assert set(got["pass_curve"]) == {"1", "2", "4", "6"}
  for k, value in got["pass_curve"].items():
    assert value == pytest.approx(np.mean([_brute_force_pass_at_k(c, int(k)) for c in correct]),
                                  abs=1e-12)
  assert got["sample_accuracy"] == pytest.approx(np.mean(correct))
  lengths = [len(policy.tokenizer.encode(t, add_special_tokens=False)) + 1
             for i in range(5) for t in plan[i][1]]
  assert got["mean_completion_tokens"] == pytest.approx(np.mean(lengths))
  # One greedy pass and one pass of N samples at the configured temperature, in chunks of
  # batch_size prompts.
  assert [c["temperature"] for c in fake.calls] == [0.0] * 3 + [0.7] * 3
  assert [c["num_samples"] for c in fake.calls] == [1] * 3 + [N] * 3
  assert [c["prompts"] for c in fake.calls] == [2, 2, 1] * 2


def test_evaluate_max_examples_and_splits(task, policy, planned):
  *_, fake = planned
  results = evaluate(policy, task, EvalConfig(k=1, n=N, max_examples=2, splits=("test",)))
  assert results["test"]["num_examples"] == 2
  assert sum(c["prompts"] for c in fake.calls) == 4  # 2 greedy + 2 sampled prompts
  assert results["test"]["maj@1"] == 0.5  # examples 0 (right) and 1 (wrong)
  with pytest.raises(ValueError, match="unknown split 'validation'"):
    evaluate(policy, task, EvalConfig(k=1, splits=("validation",)))


def test_eval_config_needs_k_at_most_n():
  with pytest.raises(ValueError, match="1 <= k <= n"):
    EvalConfig(k=8, n=4)
  with pytest.raises(ValueError, match="1 <= k <= n"):
    EvalConfig(k=0)


def test_report_table_and_plots(task, policy, planned, tmp_path):
  results = evaluate(policy, task, EvalConfig(k=K, n=N))
  rows = [("sft", results), ("ei", results)]
  table = report.markdown_table(rows)
  lines = table.strip().splitlines()
  assert lines[0] == f"| run | split | maj@1 | maj@{K} | pass@{K} | sample_accuracy |"
  assert len(lines) == 4
  metrics = results["test"]
  assert lines[2] == ("| sft | test | " + " | ".join(
      f"{metrics[k]:.3f}" for k in ("maj@1", f"maj@{K}", f"pass@{K}", "sample_accuracy")) + " |")
  report.write_json(str(tmp_path / "sub" / "results.json"), results)
  import json
  assert json.loads((tmp_path / "sub" / "results.json").read_text()) == results
  history = [{"iteration": 1, "solve_rate": 0.2, "eval_maj@1": 0.1},
             {"iteration": 2, "solve_rate": 0.5, "eval_maj@1": None}]
  import matplotlib
  backend = matplotlib.get_backend()
  matplotlib.use("svg")  # stands for a notebook's inline backend
  try:
    report.plot_pass_curves(rows, str(tmp_path / "pass_at_k.png"))
    report.plot_history(history, ["solve_rate", "eval_maj@1"], str(tmp_path / "history.png"))
    assert matplotlib.get_backend() == "svg"  # the caller's plots keep working
  finally:
    matplotlib.use(backend)
  for name in ("pass_at_k.png", "history.png"):
    _assert_png(tmp_path / name)


def _assert_png(path):
  import matplotlib.image
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
  image = matplotlib.image.imread(str(path))
  assert image.ndim == 3 and min(image.shape[:2]) > 100
  assert np.ptp(image[..., :3]) > 0  # something was drawn


def test_history_plot_reads_at_a_glance(tmp_path):
  """Integer iterations from 0 (the stage's start), titles, and the loss curve beside."""
  history = [{"iteration": 1, "solve_rate": 0.2, "eval_maj@1": 0.3, "train_loss": 1.5},
             {"iteration": 2, "solve_rate": 0.4, "eval_maj@1": 0.5, "train_loss": 1.1}]
  fig = report.plot_history(history, ["solve_rate", "eval_maj@1"], str(tmp_path / "h.png"),
                            title="ei", initial={"eval_maj@1": 0.25})
  accuracy, loss = fig.axes
  assert accuracy.get_title() == "ei: accuracy" and loss.get_title() == "ei: training loss"
  lines = {line.get_label(): line.get_xydata().tolist() for line in accuracy.lines}
  assert lines["solve_rate"] == [[0, 0.2], [1, 0.4]]  # measured on the round's starting model
  assert lines["eval_maj@1"] == [[0, 0.25], [1, 0.3], [2, 0.5]]
  assert loss.lines[0].get_xydata().tolist() == [[1, 1.5], [2, 1.1]]
  for ax in fig.axes:
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [0, 1, 2], ticks
  rows = [("sft", {"test": {"pass_curve": {"1": 0.2, "2": 0.3, "4": 0.5}}})]
  ax, = report.plot_pass_curves(rows, str(tmp_path / "p.png")).axes
  assert ax.get_title() == "pass@k" and list(ax.get_xticks()) == [1, 2, 4]
