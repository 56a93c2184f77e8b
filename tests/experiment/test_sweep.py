"""Seed sweeps: one run directory per seed with the seed in its config, resumable, the seeds
kept; as concurrent subprocesses through the CLI."""

import json
import os
import subprocess
import sys

import gin
import pytest

import fake_algorithm as fake
import run_fixtures as rf
from rlthink import algorithms, gin_utils
from rlthink.experiment import runner, sweep


@pytest.fixture
def _fake(monkeypatch):
  monkeypatch.setitem(algorithms.ALGORITHMS, "fake", algorithms.Algorithm(
      "fake_algorithm:FakeConfig", "fake_algorithm:run_stage"))
  gin_utils.register_config(fake.FakeConfig)
  fake.CALLS.clear()

  def fake_evaluate(policy, task, cfg, **extras):  # differs between seeds (their init)
    import jax
    import numpy as np
    value = float(np.mean([np.mean(x) for x in jax.tree.leaves(policy.params)]))
    return {"test": {"maj@1": value, "pass@1": value / 2}}, {"test": []}

  monkeypatch.setattr(runner, "evaluate_with_predictions", fake_evaluate)
  monkeypatch.setattr(runner.report, "plot_pass_curves", lambda *a, **k: None)
  monkeypatch.setattr(runner.report, "plot_history", lambda *a, **k: None)
  yield
  gin.clear_config()


def test_in_process_sweep_runs_each_seed_in_its_directory_and_resumes(tmp_path, _fake):
  gin_utils.parse(["models/tiny.gin"], ["ModelSpec.overrides = {'num_layers': 1}",
                                        "Experiment.stages = ['fake']", "FakeConfig.seed = 7",
                                        "EvalConfig.splits = ('test',)"])
  sweep.run_sweep(str(tmp_path), [0, 3, 5], progress=False)
  assert [c["cfg"].seed for c in fake.CALLS] == [7, 10, 12]
  with open(tmp_path / "sweep.json") as f:
    assert json.load(f)["seeds"] == [0, 3, 5]
  for seed in (0, 3, 5):
    with open(tmp_path / f"seed_{seed}" / "results.json") as f:
      assert json.load(f)["seed"] == seed
    with open(tmp_path / f"seed_{seed}" / "config.gin") as f:
      assert f"Experiment.seed = {seed}" in f.read()
  from rlthink.evaluation import tables
  import numpy as np
  rows = tables.build_report([str(tmp_path)]).to_json()["rows"]
  row = next(r for r in rows if r["stage"] == "fake" and r["split"] == "test"
             and r["field"] is None)
  per_seed = []
  for seed in (0, 3, 5):
    with open(tmp_path / f"seed_{seed}" / "results.json") as f:
      per_seed.append(json.load(f)["stages"]["fake"]["results"]["test"]["maj@1"])
  assert len(set(per_seed)) == 3  # the seeds' models differ
  stats = row["metrics"]["maj@1"]
  assert (stats["n"], sorted(stats["seeds"])) == (3, [0, 3, 5])
  np.testing.assert_allclose([stats["mean"], stats["std"]], [np.mean(per_seed), np.std(per_seed)])
  fake.CALLS.clear()
  sweep.run_sweep(str(tmp_path), None, progress=False)  # resume: the recorded seeds, all done
  assert fake.CALLS == []
  with pytest.raises(ValueError, match=r"runs seeds \[0, 3, 5\], not \[1\]"):
    sweep.run_sweep(str(tmp_path), [1], progress=False)


@pytest.mark.slow
def test_sweep_as_concurrent_processes_from_the_cli(tmp_path):
  params = list(rf.MODEL_PARAMS) + [
      "Experiment.task_options = {'size': 'tiny', 'seed': 0}", "Experiment.stages = ['sft']",
      "SFTConfig.steps = 4", "SFTConfig.batch_size = 8", "SFTConfig.max_length = 96",
      "SFTConfig.checkpoint_every = 2", "EvalConfig.k = 2", "EvalConfig.max_examples = 4",
      "EvalConfig.max_new_tokens = 8", "EvalConfig.splits = ('test',)"]
  command = [sys.executable, "-m", "rlthink.cli", "sweep", "--workdir", str(tmp_path / "s"),
             "--seeds", "0", "1", "--processes", "2", "--no_report", *rf.gin_args(params)]
  out = subprocess.run(command, cwd=str(tmp_path), env=rf.cli_env(), capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "seed 0 finished" in out.stdout and "seed 1 finished" in out.stdout
  results = {}
  for seed in (0, 1):
    with open(tmp_path / "s" / f"seed_{seed}" / "results.json") as f:
      results[seed] = json.load(f)
    assert results[seed]["seed"] == seed
    assert os.path.exists(tmp_path / "s" / f"seed_{seed}" / "train.log")
  # different init and data order: different models
  assert (results[0]["stages"]["sft"]["results"] != results[1]["stages"]["sft"]["results"]
          or results[0]["stages"]["sft"]["history"] != results[1]["stages"]["sft"]["history"])
