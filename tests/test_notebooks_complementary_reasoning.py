"""notebooks/03_complementary_reasoning.ipynb executes top to bottom on the report of the tiny
complementary-reasoning sweep (the run test_complementary_reasoning_experiment.py checks), so it
never rots: our table beside the paper's, the plots and the acceptance checks come out, with the
report's numbers. It is stored without outputs until the GPU-scale sweep has run (the
tiny run's numbers say nothing about the paper)."""

import json
import os

import complementary_reasoning_run as crr
import notebook_runs

NOTEBOOK = notebook_runs.path("03_complementary_reasoning.ipynb")
ROWS = ["SFT(Mem+Ctx)", "SFT(Mem+Ctx) → RL(Mem+Ctx)", "SFT(Mem+Ctx) → RL(Mem+Ctx) → RL(Comp)",
        "SFT(Mem+Ctx+Comp)", "SFT(Mem+Ctx) → RL(Comp)", "SFT(Comp)", "SFT(Comp) → RL(Comp)"]


def test_complementary_reasoning_notebook_is_stored_without_outputs():
  notebook_runs.assert_stored_without_outputs(NOTEBOOK)


def test_complementary_reasoning_notebook_shows_the_reports_table_plots_and_checks(
    tmp_path, tmp_path_factory, monkeypatch):
  sweep = crr.tiny_report(tmp_path_factory)
  monkeypatch.setenv("RLTHINK_CR_REPORT", sweep)  # the kernel inherits it
  outputs = notebook_runs.execute(NOTEBOOK, cwd=str(tmp_path))
  assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 3  # bars, pass@k, RL
  table, claim2, checks = [o["data"]["text/markdown"] for o in outputs
                           if "text/markdown" in o.get("data", {})]
  with open(os.path.join(sweep, "report.json")) as f:
    rows = {(r["stage"], r["split"]): r for r in json.load(f)["rows"] if r["field"] is None}
  lines = table.splitlines()[2:]
  assert [line.split(" | ")[0].lstrip("| ") for line in lines] == ROWS
  zero_shot = rows[("rl_comp", "test_zero_shot")]["metrics"]["maj@1"]
  rl_comp = lines[ROWS.index("SFT(Mem+Ctx) → RL(Comp)")].split(" | ")
  assert rl_comp[3] == f"{100 * zero_shot['mean']:.1f} ± {100 * zero_shot['std']:.1f} (n=1)"
  assert rl_comp[4:] == ["73.1", "60.9", "50.9 |"]  # the paper's numbers beside ours
  assert "| pass@4 |" in claim2.splitlines()[0] and len(claim2.splitlines()) == 2 + 6
  assert len(checks.splitlines()) == 2 + 8
