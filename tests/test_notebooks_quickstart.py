"""notebooks/01_quickstart.ipynb executes top to bottom (the quickstart: SFT then EI), so it never
rots: its plots and results table come out, the run it makes is the one it reports, and Expert
Iteration beats SFT in it. It is committed with its outputs (scripts/execute_notebooks.py), so a
reader sees the plots without running it."""

import json
import os

import pytest

import notebook_runs

NOTEBOOK = notebook_runs.path("01_quickstart.ipynb")


def _maj_at_1(table: str, stage: str) -> float:
  """maj@1 of `stage` in the results table (markdown: | run | split | maj@1 | ...)."""
  (row,) = [line for line in table.splitlines() if line.startswith(f"| {stage} | test |")]
  return float(row.split("|")[3])


def test_quickstart_notebook_is_stored_with_its_outputs():
  outputs = notebook_runs.stored_outputs(NOTEBOOK)
  assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2
  (table,) = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  assert _maj_at_1(table, "ei") > _maj_at_1(table, "sft")


def test_quickstart_notebook_runs_and_shows_plots_and_the_results_table(tmp_path):
  # Runs in tmp_path (the notebook's relative WORKDIR goes there).
  outputs = notebook_runs.execute(NOTEBOOK, cwd=str(tmp_path), timeout=900)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 2  # accuracy per EI round, pass@k against k
  tables = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  assert len(tables) == 1 and tables[0].startswith("# arithmetic: sft -> ei")
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  assert "round 2: kept" in text and "-> " in text

  workdir = tmp_path / "workdir" / "notebook_quickstart"
  with open(workdir / "results.json") as f:
    run = json.load(f)
  stages = run["stages"]
  assert run["order"] == ["sft", "ei"] and stages["ei"]["parent"] == "sft"
  assert [h["iteration"] for h in stages["ei"]["history"]] == [1, 2]
  for stage in ("sft", "ei"):
    row = f"| {stage} | test | {stages[stage]['results']['test']['maj@1']:.3f} |"
    assert row in tables[0]  # the table shows this run's numbers
  # Expert Iteration visibly helps: greedy accuracy after EI beats SFT's.
  assert _maj_at_1(tables[0], "ei") > _maj_at_1(tables[0], "sft")
  # The last cell decodes the same test questions greedily from the saved EI checkpoint.
  greedy = float(text.split("greedy accuracy: ")[1].split()[0])
  assert greedy == pytest.approx(stages["ei"]["results"]["test"]["maj@1"], abs=1e-3)
