"""Cross-generation: the reader's prompt is the SFT sequence up to the thinking's end, and a reader
answers from the thinking it is handed (right thinking -> right answers, wrong -> wrong), apart
from the thinker's own answers."""

import json
import os
import sys

import numpy as np
import pytest

import rlthink
from rlthink import tasks
from rlthink.evaluation import EvalConfig, evaluate, evaluate_with_predictions
from rlthink.evaluation import cross_generation as cg
from rlthink.evaluation.cross_generation import CrossGenConfig
from rlthink.models import tokenizer as tokenizers
from rlthink.tasks.base import PromptFormat
from rlthink.tasks.pipeline import encode_sft

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "algorithms"))
import rl_fixtures  # noqa: E402  (the shared SFT start of the RL tests)


@pytest.mark.parametrize("opened", [False, True])
@pytest.mark.parametrize("family", ["arithmetic", "general_qa"])
def test_reader_prompt_is_the_sft_sequence_up_to_the_thinking_end(family, opened):
  tok = tokenizers.builtin_tokenizer()
  task = tasks.get(family, size="tiny", seed=0,
                   prompt_format=PromptFormat(open_thinking_in_prompt=opened))
  for _, ex in zip(range(4), task.generate("train")):
    seq = encode_sft(task, ex, tok)
    expected = seq["tokens"][:len(seq["tokens"]) - int(seq["answer_mask"].sum())].tolist()
    assert cg.reader_prompt(task, ex, task.thinking(ex), tok) == expected
    assert tok.decode(expected).endswith("</think>")


def _wrong_thinking(example):
  """The reference steps with every result off by one (a wrong but well-formed thinking)."""
  steps = []
  for step in example["steps"]:
    lhs, result = step.rsplit("=", 1)
    steps.append(f"{lhs}={int(result) + 1}")
  return "\n".join(steps)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
  policy, task = rl_fixtures.sft_start(rl_fixtures.session_base(tmp_path_factory))
  return policy, task, [task.examples("test")[i] for i in range(24)]


def test_readers_answer_from_the_thinking_they_are_given(sft, tmp_path):
  policy, task, examples = sft
  cfg = CrossGenConfig(max_new_tokens=12, reader_max_new_tokens=6, seed=3)
  result = cg.cross_generation({"reference": "reference", "wrong": _wrong_thinking,
                                "empty": "empty"}, {"sft": policy}, task, examples, cfg)
  acc = {name: row["sft"] for name, row in result["accuracy"].items()}
  assert acc["reference"] > 0.6, acc  # the SFT reader copies the thinking's result
  assert acc["wrong"] < 0.2 and acc["reference"] > acc["wrong"] + 0.5, acc
  assert result["own_accuracy"] == {"reference": None, "wrong": None, "empty": None}
  assert result["num_examples"] == 24
  # Reading a row by hand gives the same verdict: the reader's answer after that thinking.
  scores, answers = cg.read(policy, task, examples[:3], [(i, task.thinking(ex)) for i, ex in
                                                         enumerate(examples[:3])], cfg)
  for ex, score, answer in zip(examples[:3], scores, answers):
    assert score == task.verify(task.reference(ex).split("</think>")[0] + "</think>" + answer, ex)
  path = str(tmp_path / "cross.png")
  fig = cg.plot_cross_generation(result, path)
  assert os.path.getsize(path) > 1000 and len(fig.axes[0].texts) == 3  # one cell per thinker
  import matplotlib.pyplot as plt
  plt.close(fig)


def test_policy_thinkers_and_unclosed_thinking(sft):
  policy, task, examples = sft
  examples = examples[:8]
  cfg = CrossGenConfig(num_samples=2, max_new_tokens=12, reader_max_new_tokens=6, seed=4)
  result = cg.cross_generation({"sft": policy}, {"sft": policy}, task, examples, cfg)
  thoughts = cg.think(policy, task, examples, cfg)  # the same seed: the same completions
  assert result["own_accuracy"]["sft"] == pytest.approx(float(np.mean(thoughts.own_rewards)))
  assert len(thoughts.rows) == 16 and [i for i, _ in thoughts.rows] == sorted(list(range(8)) * 2)
  # A thinker that never closes its thinking (an untrained model): every reader scores 0.
  noise = rlthink.init_policy(policy.config, seed=7, tokenizer=policy.tokenizer)
  closed = cg.cross_generation({"noise": noise}, {"sft": policy}, task, examples,
                               CrossGenConfig(max_new_tokens=6, reader_max_new_tokens=6))
  assert closed["closed_rate"]["noise"] < 0.2
  if closed["closed_rate"]["noise"] == 0:
    assert closed["accuracy"]["noise"]["sft"] == 0.0
  rows = cg.think(noise, task, examples, CrossGenConfig(max_new_tokens=6, unclosed="close")).rows
  assert all(text is not None for _, text in rows)  # handed over as they are


def test_config_errors_name_the_option():
  with pytest.raises(ValueError, match="unclosed"):
    CrossGenConfig(unclosed="drop")
  with pytest.raises(ValueError, match="thinker 'oracle'"):
    cg.think("oracle", None, [], CrossGenConfig())


def test_evaluate_cross_generation_reads_the_greedy_thinking(sft):
  policy, task, examples = sft
  cfg = EvalConfig(max_examples=8, max_new_tokens=12, metrics=("maj@1", "cross_generation"),
                   splits=("test",))
  noise = rlthink.init_policy(policy.config, seed=7, tokenizer=policy.tokenizer)
  results, predictions = evaluate_with_predictions(policy, task, cfg,
                                                   readers={"sft": policy, "noise": noise})
  # The same as cross-generation with a greedy thinker, run apart.
  direct = cg.cross_generation({"greedy": policy}, {"sft": policy, "noise": noise}, task,
                               examples[:8], CrossGenConfig(temperature=0.0, max_new_tokens=12,
                                                            reader_max_new_tokens=12))
  got = results["test"]
  for reader in ("sft", "noise"):
    assert got[f"cross_generation/{reader}"] == pytest.approx(direct["accuracy"]["greedy"][reader])
    assert got[f"cross_generation/{reader}"] == pytest.approx(
        np.mean([row["read_by"][reader] for row in predictions["test"]]))
  assert got["closed_rate"] == pytest.approx(direct["closed_rate"]["greedy"])
  assert got["maj@1"] == pytest.approx(direct["own_accuracy"]["greedy"])
  assert got["cross_generation/sft"] > got["cross_generation/noise"]
  own = evaluate(policy, task, cfg)["test"]  # no readers: the policy reads its own thinking
  assert set(k for k in own if k.startswith("cross_generation/")) == {"cross_generation/self"}
  assert own["cross_generation/self"] == got["cross_generation/sft"]


def test_cross_generation_matrix_writes_json_markdown_and_png(sft, tmp_path):
  policy, task, _ = sft
  cfg = CrossGenConfig(max_examples=6, reader_max_new_tokens=6, split="test")
  result = cg.cross_generation_matrix({"reference": "reference", "empty": "empty"},
                                      {"sft": policy}, task, cfg)
  assert result["split"] == "test" and result["num_examples"] == 6
  paths = cg.write_cross_generation(result, str(tmp_path / "cross"))
  assert json.loads(open(paths["json"]).read()) == result
  lines = open(paths["markdown"]).read().splitlines()
  assert lines[2] == "| thinker | sft | own answers | closed thinking |"
  assert lines[4] == f"| reference | {result['accuracy']['reference']['sft']:.3f} | - | 1.000 |"
  assert len(lines) == 6 and os.path.getsize(paths["png"]) > 1000
