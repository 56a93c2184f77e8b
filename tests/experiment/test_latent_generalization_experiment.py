"""experiments/latent_generalization_tiny.gin end to end on CPU (the GPU file's stage graph at toy
sizes): four arms, the eight test and transfer splits, maj@1 and likelihood by source in the
report; and notebooks/06_latent_generalization.ipynb executed on that same run's report."""

import json
import os

import gin
import pytest

from rlthink import gin_utils
from rlthink.evaluation import tables
from rlthink.evaluation.predictions import read_predictions
from rlthink.experiment import runner
from rlthink.tasks.latent_generalization.common import KINDS
from rlthink.tasks.latent_generalization.dataset import SOURCES

import notebook_runs

TINY = "experiments/latent_generalization_tiny.gin"
ARMS = {"in_weights": None, "warm_start": "in_weights", "rl": "warm_start",
        "in_context": "in_weights"}
SPLITS = [f"{side}_{kind}" for side in ("test", "transfer") for kind in KINDS]
NOTEBOOK = notebook_runs.path("06_latent_generalization.ipynb")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
  """The tiny experiment, run once, with its report written into the run directory."""
  workdir = str(tmp_path_factory.mktemp("latent_generalization") / "run")
  gin_utils.parse([TINY], [])
  try:
    runner.run(workdir, progress=False)
  finally:
    gin.clear_config(clear_constants=True)
  tables.build_report([workdir]).write(workdir)
  return workdir


@pytest.mark.slow
def test_every_arm_is_reported_per_kind_set_and_source(run):
  with open(os.path.join(run, "results.json")) as f:
    results = json.load(f)
  assert results["order"] == list(ARMS)
  assert {s: v["parent"] for s, v in results["stages"].items()} == ARMS
  with open(os.path.join(run, "report.json")) as f:
    rows = json.load(f)["rows"]
  seen_sources = set()
  for stage in ARMS:
    for split in SPLITS:
      main = [r for r in rows if (r["stage"], r["split"], r["field"]) == (stage, split, None)]
      assert len(main) == 1 and set(main[0]["metrics"]) == {"maj@1", "likelihood"}, (stage, split)
      by_source = [r for r in rows if (r["stage"], r["split"], r["field"]) == (stage, split,
                                                                               "source")]
      assert by_source and {r["value"] for r in by_source} <= set(SOURCES)
      assert sum(r["examples"] for r in by_source) == main[0]["examples"]
      seen_sources |= {r["value"] for r in by_source}
      for r in by_source + main:
        assert 0.0 <= r["metrics"]["likelihood"]["mean"] <= 1.0
  assert seen_sources == set(SOURCES)
  with open(os.path.join(run, "report.md")) as f:
    markdown = f.read()
  assert "### by source" in markdown and all(f"| {stage} |" in markdown for stage in ARMS)
  # The in-context arm is asked with the facts in the prompt, the others without; every row
  # holds each option's log-likelihood and the pick.
  for stage in ARMS:
    predictions = read_predictions(os.path.join(run, "eval", f"{stage}.predictions.jsonl"))
    assert set(predictions) == set(SPLITS)
    for row in (r for split_rows in predictions.values() for r in split_rows):
      assert row["question"].startswith("Facts:\n") == (stage == "in_context")
      assert row["likelihood_choice"] == max(range(len(row["option_logprobs"])),
                                             key=row["option_logprobs"].__getitem__)
  history = results["stages"]["rl"]["history"]
  assert [h["iteration"] for h in history] == [1, 2] and all(h["samples"] == 4 for h in history)


def test_notebook_is_stored_without_outputs():
  notebook_runs.assert_stored_without_outputs(NOTEBOOK)


@pytest.mark.slow
def test_notebook_shows_the_table_findings_and_plots_of_the_run(run, monkeypatch):
  monkeypatch.setenv("RLTHINK_LG_REPORT", run)  # the kernel inherits this environment
  outputs = notebook_runs.execute(NOTEBOOK, cwd=os.path.dirname(NOTEBOOK))
  assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 3
  tables_md = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  assert len(tables_md) == 4  # maj@1, likelihood, maj@1 by source, the findings
  with open(os.path.join(run, "report.json")) as f:
    rows = json.load(f)["rows"]
  cell = next(r for r in rows if (r["stage"], r["split"], r["field"]) == ("rl", "test_reversal",
                                                                           None))
  likelihood = 100 * cell["metrics"]["likelihood"]["mean"]
  table = next(t for t in tables_md if t.startswith("**likelihood**"))
  line = next(l for l in table.splitlines() if l.startswith("| (c) + RL on set 0 |"))
  assert line.split(" | ")[2] == f"{likelihood:.1f} ± 0.0"  # test_reversal, one seed
  findings = next(t for t in tables_md if t.startswith("| finding (paper)"))
  assert len(findings.splitlines()) == 2 + 12
