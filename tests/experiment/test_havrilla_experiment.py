"""experiments/havrilla_tiny.gin end to end on CPU (the GPU file's 25-stage graph at toy sizes):
every policy reported with maj@1, maj@k, rerank@k (by the ORM trained on its own samples, after
it) and pass@k, RCRL evaluated conditioned, the RL curves with their gains; the GPU file's stage
graph and the chunks of docs/results/havrilla.md; and notebooks/04_havrilla.ipynb executed on the
same run's report."""

import json
import os
import re
import shlex
import subprocess
import sys

import gin
import pytest

import notebook_runs
import run_fixtures as rf
from rlthink import algorithms, gin_utils
from rlthink.evaluation import EvalConfig, tables
from rlthink.experiment import Experiment, runner
from rlthink.train import OptimizerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "notebooks", "04_havrilla.ipynb")
DOCS = os.path.join(ROOT, "docs", "results", "havrilla.md")
POLICIES = {"sft": None, "ei": "sft", "ppo": "sft", "rcrl": "sft", "ei_step": "sft",
            "ei_prm": "sft", "ei_orm": "sft", "ppo_step": "sft", "ppo_prm": "sft",
            "ppo_orm": "sft", "sft_weak": None, "ei_weak": "sft_weak"}
RL = [s for s, parent in POLICIES.items() if parent is not None]


def _graph(path, check=None):
  """{stage: (algorithm, parent)} and each evaluated stage's reranker, as the gin file binds
  them; check(stage, its algorithm config, its OptimizerConfig, its EvalConfig) for each stage
  (every config built, so a bad value fails here)."""
  gin_utils.parse([path], [])
  try:
    stages = Experiment().stage_specs()
    evals = {s.name: runner.configured_in_scope(EvalConfig, s.name) for s in stages}
    for s in stages:
      cfg = runner.configured_in_scope(algorithms.get(s.algorithm).config_class(), s.name)
      optimizer = runner.configured_in_scope(OptimizerConfig, s.name)
      if check:
        check(s, cfg, optimizer, evals[s.name])
  finally:
    gin.clear_config(clear_constants=True)
  return ({s.name: (s.algorithm, s.parent) for s in stages},
          {s.name: evals[s.name].reward_model_stage for s in stages if s.evaluate})


def _gpu_scale(stage, cfg, optimizer, ev):
  # SFT decays its rate; RL and reward models keep theirs (a curve flattens when the arm does).
  assert optimizer.schedule == ("cosine" if stage.algorithm == "sft" else "constant"), stage.name
  if stage.evaluate:
    assert (ev.k, ev.n, ev.iteration_metrics) == (96, 96, ("maj@1",)), stage.name
    assert ev.metrics == ("maj@1", "maj@k", "pass@k", "rerank@k")
    assert ev.condition == ("rcrl" if stage.name == "rcrl" else None)
  if stage.algorithm in ("ei", "ppo", "rcrl", "orm", "prm"):
    assert cfg.num_questions == 2048, stage.name  # one question pool for every arm


def test_the_tiny_file_runs_the_gpu_files_graph_and_each_policy_has_its_own_reranker():
  graph, rerankers = _graph("experiments/havrilla.gin", _gpu_scale)
  assert _graph("experiments/havrilla_tiny.gin") == (graph, rerankers)
  assert {s: parent for s, (_, parent) in graph.items() if s in POLICIES} == POLICIES
  assert set(rerankers) == set(POLICIES)
  for stage, orm in rerankers.items():  # an ORM trained on the stage's own samples
    assert graph[orm] == ("orm", stage) or (stage, orm) == ("sft", "orm"), stage


def test_the_documented_chunks_report_every_policy_once():
  """Each `rlthink sweep` line of docs/results/havrilla.md names stages of the GPU file, every
  policy is reported by exactly one chunk, each chunk has its own workdir, and the report line
  reads them all."""
  graph, _ = _graph("experiments/havrilla.gin")
  with open(DOCS) as f:
    lines = [line.strip() for line in f if line.strip().startswith("rlthink ")]
  sweeps = [shlex.split(line) for line in lines if line.startswith("rlthink sweep")]
  workdirs, reported = [], []
  for words in sweeps:
    assert words[words.index("--gin_file") + 1] == "experiments/havrilla.gin"
    assert words[words.index("--seeds") + 1:words.index("--seeds") + 4] == ["0", "1", "2"]
    workdirs.append(words[words.index("--workdir") + 1])
    reported += words[words.index("--stages") + 1].split(",")
  assert sorted(reported) == sorted(POLICIES) and len(set(workdirs)) == len(workdirs)
  (report,) = [shlex.split(line) for line in lines if line.startswith("rlthink report")]
  assert report[2:2 + len(workdirs)] == workdirs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
  """The tiny experiment swept over one seed by `rlthink sweep`, as the GPU chunks are run, with
  its report (EI and PPO curves overlaid) written into the sweep directory. Its 25 stages compile
  many identical programs: the session's persistent XLA cache lets each compile once."""
  sweep = tmp_path_factory.mktemp("havrilla") / "sweep"
  env = rf.cli_env()
  # One CPU device, as one GPU runs it (and a fifth less CPU time than 8 forced devices).
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env["XLA_FLAGS"])
  env.setdefault("JAX_COMPILATION_CACHE_DIR",
                 str(tmp_path_factory.getbasetemp() / "rlthink_shared_run" / "jax_cache"))
  env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  log = str(sweep.parent / "sweep.log")
  with open(log, "wb") as f:
    proc = subprocess.run(
        [sys.executable, "-m", "rlthink.cli", "sweep", "--gin_file",
         "experiments/havrilla_tiny.gin", "--workdir", str(sweep), "--seeds", "0",
         "--no_progress", "--no_report"], env=env, stdout=f, stderr=subprocess.STDOUT,
        timeout=900)
  assert proc.returncode == 0, rf.tail(log)
  tables.build_report([str(sweep)], curve_stages=["ei", "ppo"]).write(str(sweep))
  return str(sweep)


@pytest.mark.slow
def test_every_policy_is_reported_with_every_metric(run):
  with open(os.path.join(run, "seed_0", "results.json")) as f:
    results = json.load(f)
  order = results["order"]
  assert [s for s in order if s in POLICIES] == list(POLICIES)
  for stage in POLICIES:  # each policy's reranker trained after it, on its samples
    orm = "orm" if stage == "sft" else f"rerank_{stage}"
    assert results["stages"][orm]["parent"] == stage and order.index(orm) > order.index(stage)
  with open(os.path.join(run, "report.json")) as f:
    report = json.load(f)
  rows = {r["stage"]: r for r in report["rows"] if r["field"] is None}
  assert set(rows) == set(POLICIES)  # reward models are not policies
  for stage, row in rows.items():
    assert row["split"] == "test" and row["n"] == 1 and row["examples"] == 4
    assert {"maj@1", "maj@2", "rerank@2", "pass@2"} <= set(row["metrics"]), stage
    split = results["stages"][stage]["results"]["test"]
    assert split["orm_accuracy"] is not None  # rerank@2 read its ORM's scores
  # RCRL is evaluated with its '<correct>' label, and its reranker sampled the same way.
  with open(os.path.join(run, "seed_0", "rerank_rcrl", "stage.json")) as f:
    assert json.load(f)["fingerprint"]["RewardModelConfig.condition"] == "rcrl"
  with open(os.path.join(run, "seed_0", "eval", "rcrl.json")) as f:
    assert json.load(f)["key"]["EvalConfig.condition"] == "rcrl"
  # The sample-complexity curves: every RL arm, from its parent's maj@1, on a samples axis.
  curves = {c["stage"]: c for c in report["curves"]}
  assert set(curves) == set(RL)
  assert curves["ppo"]["iteration"] == [1, 2] and curves["ei"]["iteration"] == [1]
  for stage, curve in curves.items():
    start = rows[POLICIES[stage]]["metrics"]["maj@1"]["mean"]
    assert curve["gain"]["start"]["mean"] == start and curve["samples"][0] > 0
    assert curve["mean"][-1] == rows[stage]["metrics"]["maj@1"]["mean"]
  with open(os.path.join(run, "report.md")) as f:
    markdown = f.read()
  assert "completions sampled to reach 90% of the final maj@1 gain" in markdown
  assert all(f"| {stage} |" in markdown for stage in POLICIES)
  assert os.path.getsize(os.path.join(run, "samples_maj_at_1.png")) > 0


def test_notebook_is_stored_without_outputs():
  notebook_runs.assert_stored_without_outputs(NOTEBOOK)


@pytest.mark.slow
def test_notebook_shows_the_tables_findings_and_plots_of_the_run(run, monkeypatch):
  monkeypatch.setenv("RLTHINK_HAVRILLA_REPORT", run)  # the kernel inherits this environment
  outputs = notebook_runs.execute(NOTEBOOK, cwd=os.path.dirname(NOTEBOOK))
  assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2
  shown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  assert [t.split("\n")[0] for t in shown] == [
      "**Algorithms** (from the full SFT init, sparse reward)",
      "**Rewards** (maj@1 and pass@K of EI and PPO)", "**Init** (before and after EI)",
      "**Completions to 90% of the final maj@1 gain**", "| finding (paper) | check on ours | ours "
      "| holds |"]
  with open(os.path.join(run, "report.json")) as f:
    rows = {r["stage"]: r for r in json.load(f)["rows"] if r["field"] is None}
  algorithms = shown[0].splitlines()
  for label, stage in (("SFT", "sft"), ("EI", "ei"), ("PPO", "ppo")):
    line = next(l for l in algorithms if l.startswith(f"| {label} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    for value, metric in zip(cells[1:], ("maj@1", "maj@2", "rerank@2", "pass@2")):
      assert value == f"{100 * rows[stage]['metrics'][metric]['mean']:.1f} ± 0.0"  # one seed
  findings = shown[-1].splitlines()
  assert len(findings) == 2 + 7
  assert all(re.search(r"\| (yes|no|n/a) \|$", line) for line in findings[2:])
