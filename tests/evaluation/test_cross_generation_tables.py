"""The report's cross-generation matrices: per split, the stages read by the same readers form a
thinker x reader table of mean ± std over seeds (numpy, ddof=0) with each thinker's own accuracy,
as markdown and as a heatmap; stages read by other readers (another task) form their own."""

import json
import os

import numpy as np
import pytest

from rlthink.evaluation import cross_generation_tables as cgt
from rlthink.evaluation import tables

SEEDS = (0, 1, 2)
QA = {"thinkers": ("sft", "grpo", "start"), "readers": ("reader_small", "reader_large")}
ARITH = {"thinkers": ("arith_sft",), "readers": ("arith_reader",)}


def _split(rng, readers):
  out = {"maj@1": rng.random(), "closed_rate": rng.random(), "num_examples": 10,
         **{f"cross_generation/{r}": rng.random() for r in readers}}
  out["breakdown"] = {"shortcut_works": {"False": {"maj@1": rng.random(), "n": 4,
                                                   **{f"cross_generation/{r}": rng.random()
                                                      for r in readers}}}}
  return out


@pytest.fixture
def sweep(tmp_path):
  rng = np.random.default_rng(0)
  for seed in SEEDS:
    stages = {"reader_small": {"algorithm": "sft", "results": {"test": {"maj@1": 0.5}}}}
    for group in (QA, ARITH):
      for stage in group["thinkers"]:
        stages[stage] = {"algorithm": "sft", "results": {
            "test": _split(rng, group["readers"]), "test_no_shortcut": _split(rng, group["readers"])}}
    run = tmp_path / f"seed_{seed}"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"experiment": "start", "seed": seed,
                                                  "order": list(stages), "stages": stages}))
  (tmp_path / "sweep.json").write_text(json.dumps(
      {"seeds": list(SEEDS), "runs": {str(s): f"seed_{s}" for s in SEEDS}}))
  return str(tmp_path)


def test_matrices_are_the_seed_means_per_reader_set(sweep):
  report = tables.build_report([sweep])
  found = cgt.matrices(report.rows)
  assert [(m["split"], m["thinkers"]) for m in found] == [
      ("test", ["sft", "grpo", "start"]), ("test_no_shortcut", ["sft", "grpo", "start"]),
      ("test", ["arith_sft"]), ("test_no_shortcut", ["arith_sft"])]
  per_seed = [json.load(open(os.path.join(sweep, f"seed_{s}", "results.json"))) for s in SEEDS]
  for m in found:
    assert sorted(m["readers"]) == sorted(QA["readers"] if m["thinkers"][0] == "sft"
                                          else ARITH["readers"])
    for thinker in m["thinkers"]:
      for reader in m["readers"]:
        values = [r["stages"][thinker]["results"][m["split"]][f"cross_generation/{reader}"]
                  for r in per_seed]
        cell = m["cells"][thinker][reader]
        assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert cell["std"] == pytest.approx(np.std(values), abs=1e-12) and cell["n"] == 3
      own = [r["stages"][thinker]["results"][m["split"]]["maj@1"] for r in per_seed]
      assert m["beside"][thinker]["maj@1"]["mean"] == pytest.approx(np.mean(own), abs=1e-12)


def test_report_writes_the_tables_and_heatmaps(sweep, tmp_path):
  out = tmp_path / "out"
  report = tables.build_report([sweep])
  paths = report.write(str(out))
  text = (out / "report.md").read_text()
  assert text.count("### cross-generation: test (sft, grpo, start)") == 1
  assert text.count("### cross-generation: test (arith_sft)") == 1
  cell = cgt.matrices(report.rows)[0]["cells"]["grpo"]["reader_large"]
  assert f"{cell['mean']:.3f} ± {cell['std']:.3f}" in text.split("(sft, grpo, start)")[1]
  names = ["cross_generation_test_sft.png", "cross_generation_test_no_shortcut_sft.png",
           "cross_generation_test_arith_sft.png", "cross_generation_test_no_shortcut_arith_sft.png"]
  assert [n for n in paths if n.startswith("cross_generation_")] == names
  for name in names:
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # No cross-generation metric, no section and no heatmap.
  assert cgt.matrices([r for r in report.rows if r["stage"] == "reader_small"]) == []
