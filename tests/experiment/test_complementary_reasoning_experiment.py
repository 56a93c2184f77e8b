"""Cheng et al. (2025)'s table as an experiment: configs/experiments/complementary_reasoning.gin
(GPU scale) and its tiny CPU variant share one stage graph, references and metrics; the results
page's chunks report every stage once; the tiny sweep's `rlthink report` has every stage on every
test split with maj@1 (and pass@k for the SFT(Comp) arms) beside the paper's numbers."""

import json
import os

import gin
import pytest

import complementary_reasoning_run as crr
from rlthink import gin_utils
from rlthink.evaluation import EvalConfig
from rlthink.experiment import Experiment
from rlthink.experiment.runner import configured_in_scope

BIG = "experiments/complementary_reasoning.gin"
STAGES = ["sft_memctx", "rl_memctx", "rl_memctx_comp", "sft_all", "rl_comp", "sft_comp",
          "sft_comp_rl"]
SPLITS = ["test_iid", "test_composition", "test_zero_shot"]
PASS_AT_K = ("sft_comp", "sft_comp_rl")
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "docs", "results", "complementary_reasoning.md")


def _settings(gin_file: str) -> dict:
  """The stage graph, references and per-stage evaluation of an experiment file."""
  gin_utils.parse([gin_file], [])
  try:
    exp = Experiment()
    evals = {s: configured_in_scope(EvalConfig, s) for s in STAGES}
    return {"stages": [s.to_json() | {"task_options": None} for s in exp.stage_specs()],
            "references": exp.references, "tokenizer": exp.tokenizer,
            "metrics": {s: e.metrics for s, e in evals.items()},
            "splits": {s: e.splits for s, e in evals.items()}}
  finally:
    gin.clear_config()


def test_the_tiny_file_runs_the_gpu_files_stage_graph():
  big, tiny = _settings(BIG), _settings(crr.GIN_FILE)
  assert big == tiny
  assert [s["name"] for s in big["stages"]] == STAGES
  assert big["metrics"]["sft_comp"] == ("maj@1", "pass@k")
  gin_utils.parse([BIG], [])
  try:
    assert configured_in_scope(EvalConfig, "sft_comp_rl").k == 64
  finally:
    gin.clear_config()
  chunks = [c.split(",") for c in crr.CHUNKS]  # each stage reported by exactly one chunk
  assert sorted(s for c in chunks for s in c) == sorted(STAGES)
  with open(DOCS) as f:
    docs = f.read()
  for chunk in crr.CHUNKS:
    assert f"--stages {chunk} " in docs


def test_the_tiny_sweep_reports_every_stage_split_and_metric(tmp_path_factory):
  out = crr.tiny_report(tmp_path_factory)
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  rows = {(r["stage"], r["split"]): r for r in report["rows"] if r["field"] is None}
  assert sorted(rows) == sorted((s, split) for s in STAGES for split in SPLITS)
  references = _settings(BIG)["references"]
  for (stage, split), row in rows.items():
    assert row["n"] == 1 and row["seeds"] == [0]
    metrics = {m for m in row["metrics"] if m.startswith(("maj@", "pass@"))}
    assert metrics == ({"maj@1", "pass@4"} if stage in PASS_AT_K else {"maj@1"})
    assert 0 <= row["metrics"]["maj@1"]["mean"] <= 1
    assert row["reference"] == references.get(stage, {}).get(split, {})
  assert {c["stage"] for c in report["curves"]} == {"rl_memctx", "rl_memctx_comp", "rl_comp",
                                                    "sft_comp_rl"}
  with open(os.path.join(out, "report.md")) as f:
    text = f.read()
  header = next(line for line in text.splitlines() if line.startswith("| stage | algorithm"))
  assert header.split(" | ")[4:6] == ["maj@1", "pass@4"]
  assert "| rl_comp | grpo | test_zero_shot | 1 |" in text and "(ref 0.509)" in text
