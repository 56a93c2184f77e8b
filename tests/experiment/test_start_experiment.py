"""experiments/start.gin and its CPU variant start_tiny.gin: the same stage graph, arms at equal
samples, readers of each task trained in the experiment; the tiny file run end to end the way
docs/results/start.md runs the GPU one (two chunks, one report), with every stage, split,
shortcut_works group, reader column and cross-generation table in the report (which also checks
that stages evaluated without cross-generation load no readers); and notebooks/05_start.ipynb
executed on that same report."""

import json
import os
import re
import subprocess
import sys

import gin
import pytest

import notebook_runs
import run_fixtures as rf
from rlthink import gin_utils
from rlthink.algorithms.grpo import GRPOConfig
from rlthink.algorithms.start import STARTConfig
from rlthink.evaluation import EvalConfig, tables
from rlthink.experiment import Experiment
from rlthink.experiment.runner import configured_in_scope
from rlthink.train import OptimizerConfig

FILES = ("experiments/start.gin", "experiments/start_tiny.gin")
DOCS = os.path.join(rf.REPO, "docs", "results", "start.md")
NOTEBOOK = os.path.join(rf.REPO, "notebooks", "05_start.ipynb")
THINKERS = {"sft": "general_qa", "grpo": "general_qa", "start": "general_qa",
            "arith_sft": "arithmetic", "arith_grpo": "arithmetic"}
READERS = {"general_qa": ["reader_small", "reader_medium", "reader_large"],
           "arithmetic": ["arith_reader_small", "arith_reader_medium", "arith_reader_large"]}
SPLITS = {"general_qa": ["test", "test_no_shortcut"], "arithmetic": ["test"]}


def _parsed(path):
  """(the stages, {stage: (algorithm config, EvalConfig)}) bound by a gin file."""
  gin_utils.parse([path], [])
  try:
    stages = Experiment().stage_specs()
    configs = {}
    for s in stages:
      cls = {"grpo": GRPOConfig, "start": STARTConfig}.get(s.algorithm)
      configs[s.name] = (cls and configured_in_scope(cls, s.name),
                         configured_in_scope(EvalConfig, s.name),
                         configured_in_scope(OptimizerConfig, s.name))
    return stages, configs
  finally:
    gin.clear_config(clear_constants=True)


def _chunks() -> list[str]:
  """The --stages lists of the sweep commands in docs/results/start.md."""
  with open(DOCS) as f:
    return re.findall(r"rlthink sweep --gin_file experiments/start\.gin .*--stages ([\w,]+)",
                      f.read())


def test_gpu_and_tiny_files_share_the_graph_equal_samples_and_readers():
  (big, big_cfg), (tiny, tiny_cfg) = (_parsed(path) for path in FILES)
  shape = lambda stages: [(s.name, s.algorithm, s.parent, s.task) for s in stages]
  assert shape(big) == shape(tiny)
  for stages, configs in ((big, big_cfg), (tiny, tiny_cfg)):
    by_name = {s.name: s for s in stages}
    rl = {name: cfg for name, (cfg, *_) in configs.items() if cfg is not None}
    assert sorted(rl) == ["arith_grpo", "grpo", "start"]
    samples = {n: c.iterations * c.prompts_per_iteration * c.samples_per_prompt
               for n, c in rl.items()}
    assert len(set(samples.values())) == 1, samples  # every arm draws the same samples
    assert [span for span, _ in rl["start"].schedule] == ["thinking", "response"]
    for name, cfg in rl.items():  # the same rate and loss for every arm, constant in time
      assert configs[name][2].schedule == "constant"
      assert (cfg.learning_rate, cfg.kl_coef, cfg.aggregation, cfg.max_new_tokens) == (
          rl["grpo"].learning_rate, rl["grpo"].kl_coef, "token_mean", rl["grpo"].max_new_tokens)
    for thinker, task in THINKERS.items():
      ev = configs[thinker][1]
      assert "cross_generation" in ev.metrics and list(ev.readers) == READERS[task]
      assert list(ev.splits) == SPLITS[task] and by_name[thinker].task == task
    for task, readers in READERS.items():  # one reference-only SFT run, read at three budgets
      assert [by_name[r].parent for r in readers] == [None] + readers[:2]
      for r in readers:
        options = by_name[r].task_options
        assert all(options.get(k, 0.0) == 0.0 for k in options if k.startswith("sft_"))
        assert configs[r][1].metrics == ("maj@1",)
    assert by_name["sft"].task_options["sft_bypass_fraction"] > 0  # the shortcut is in SFT
  # The documented chunks report every stage once.
  names = sorted(s for chunk in _chunks() for s in chunk.split(","))
  assert len(_chunks()) == 2 and names == sorted(s.name for s in big)


def _run_chunk(workdir: str, stages: str, log: str, cache: str) -> None:
  env = dict(rf.cli_env(), JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  command = [sys.executable, "-m", "rlthink.cli", "sweep", "--gin_file", FILES[1], "--workdir",
             workdir, "--stages", stages, "--seeds", "0", "--no_progress", "--no_report"]
  with open(log, "ab") as out:
    proc = subprocess.run(command, cwd=os.path.dirname(workdir), env=env, stdout=out,
                          stderr=subprocess.STDOUT, timeout=900)
  assert proc.returncode == 0, rf.tail(log)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
  """The tiny experiment run as the docs' chunks (seed 0) and reported together."""
  root = tmp_path_factory.mktemp("start")
  # Stages of the same shapes (the SFT steps, the samplers) compile once for both chunks.
  cache = str(root / "jax_cache")
  chunks = [str(root / f"chunk_{i}") for i in range(len(_chunks()))]
  for workdir, stages in zip(chunks, _chunks()):
    _run_chunk(workdir, stages, str(root / "train.log"), cache)
  out = str(root / "report")
  tables.build_report(chunks).write(out)
  return out


def _rows(report_dir):
  with open(os.path.join(report_dir, "report.json")) as f:
    return json.load(f)["rows"]


@pytest.mark.slow
def test_report_has_every_stage_split_group_and_cross_generation_table(report):
  rows = _rows(report)
  main = {(r["stage"], r["split"]): r for r in rows if r["field"] is None}
  for task, readers in READERS.items():
    stages = readers + [t for t, k in THINKERS.items() if k == task]
    assert {s for s, _ in main if s in stages} == set(stages)
    for stage in stages:
      for split in SPLITS[task]:
        metrics = set(main[(stage, split)]["metrics"])
        if stage in readers:
          assert metrics == {"maj@1"}, (stage, split)
        else:
          assert metrics == {"maj@1", "closed_rate"} | {f"cross_generation/{r}" for r in readers}
  assert {s for s, _ in main} == set(THINKERS) | {r for rs in READERS.values() for r in rs}
  for stage in ("sft", "grpo", "start"):  # general QA, split by whether the shortcut works
    groups = {(r["split"], r["value"]): r for r in rows
              if r["stage"] == stage and r["field"] == "shortcut_works"}
    assert set(groups) == {("test", "True"), ("test", "False"), ("test_no_shortcut", "False")}
    assert (groups[("test", "True")]["examples"] + groups[("test", "False")]["examples"]
            == main[(stage, "test")]["examples"])
    assert "cross_generation/reader_large" in groups[("test_no_shortcut", "False")]["metrics"]
  with open(os.path.join(report, "report.md")) as f:
    markdown = f.read()
  for heading in ("### cross-generation: test (sft, grpo, start)",
                  "### cross-generation: test_no_shortcut (sft, grpo, start)",
                  "### cross-generation: test (arith_sft, arith_grpo)", "### by shortcut_works"):
    assert markdown.count(heading) == 1, heading
  for name in ("cross_generation_test_sft.png", "cross_generation_test_no_shortcut_sft.png",
               "cross_generation_test_arith_sft.png", "samples_maj_at_1.png"):
    assert os.path.getsize(os.path.join(report, name)) > 1000, name
  with open(os.path.join(report, "report.json")) as f:
    curves = {c["stage"]: c for c in json.load(f)["curves"]}
  assert sorted(curves) == ["arith_grpo", "grpo", "start"]
  assert all(c["iteration"] == [1, 2] for c in curves.values())
  assert curves["grpo"]["samples"] == curves["start"]["samples"]  # equal samples


def test_notebook_is_stored_without_outputs():
  notebook_runs.assert_stored_without_outputs(NOTEBOOK)


@pytest.mark.slow
def test_notebook_shows_the_tables_criteria_and_plots_of_the_run(report, monkeypatch):
  monkeypatch.setenv("RLTHINK_START_REPORT", report)  # the kernel inherits this environment
  outputs = notebook_runs.execute(NOTEBOOK, cwd=os.path.dirname(NOTEBOOK))
  assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 3
  shown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  accuracy = next(t for t in shown if t.startswith("**maj@1**"))
  rows = _rows(report)
  cell = next(r for r in rows if (r["stage"], r["split"], r["field"], r["value"])
              == ("start", "test", "shortcut_works", "False"))
  line = next(l for l in accuracy.splitlines() if l.startswith("| start |"))
  assert f"{100 * cell['metrics']['maj@1']['mean']:.1f} ± 0.0" in line.split(" | ")[3]
  gains = next(t for t in shown if t.startswith("**cross-generation gain of GRPO over SFT**"))
  assert len([l for l in gains.splitlines() if l.startswith("|")]) == 2 + 4  # readers, mean
  findings = next(t for t in shown if t.startswith("| finding (paper)"))
  assert len(findings.splitlines()) == 2 + 2 + 3 + 1
