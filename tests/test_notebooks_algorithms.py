"""notebooks/02_algorithms.ipynb executes top to bottom (SFT, then EI, PPO, GRPO and START from the
same start, then cross-generation) at tiny scale, so it never rots: its plots and table come out
and the results it saves are the ones it shows. It is committed with its outputs."""

import json
import os

import pytest

import notebook_runs

NOTEBOOK = notebook_runs.path("02_algorithms.ipynb")
ALGORITHMS = ("EI", "PPO", "GRPO", "START")


def test_algorithms_notebook_is_stored_with_its_outputs():
  """Committed after one clean run (scripts/execute_notebooks.py): a reader sees its plots."""
  outputs = notebook_runs.stored_outputs(NOTEBOOK)
  assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2


@pytest.mark.slow
def test_algorithms_notebook_runs_and_compares_the_four_algorithms(tmp_path):
  # Runs in tmp_path (the notebook's relative WORKDIR goes there).
  outputs = notebook_runs.execute(NOTEBOOK, cwd=str(tmp_path), timeout=400)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 2  # the curves, the cross-generation heatmap
  tables = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  assert len(tables) == 1

  workdir = tmp_path / "workdir" / "notebook_algorithms"
  with open(workdir / "results.json") as f:
    results = json.load(f)
  for name in ALGORITHMS:
    history = results["histories"][name]
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    assert all(0 <= h["eval_maj@1"] <= h["eval_pass@4"] + 1e-9 for h in history)
    final = results["final"][name]
    assert f"| {name} | {final['maj@1']:.3f} | {final['maj@4']:.3f} |" in tables[0]
    assert os.path.isdir(workdir / name.lower() / "checkpoints")
  assert [h["span"] for h in results["histories"]["START"]] == ["thinking"] * 2 + ["response"] * 2
  cross = results["cross_generation"]
  assert set(cross["accuracy"]) == {"SFT", "START", "reference", "empty"}
  # The reference thinking is the readers' ceiling: the SFT reader copies its results.
  assert cross["accuracy"]["reference"]["SFT"] >= cross["accuracy"]["empty"]["SFT"]
  assert (workdir / "algorithms.png").exists() and (workdir / "cross_generation.png").exists()
