"""Reports across runs: a 3-seed sweep (results.json files written here) plus a lone run give
mean ± std (numpy, ddof=0) and n equal to numpy on the per-seed JSON, with the references beside
ours, the breakdowns, the sample-complexity curves and the PNGs."""

import json
import os
import shutil

import numpy as np
import pytest

from rlthink.evaluation import tables

SEEDS = (0, 1, 2)
REFERENCE = 0.55


def _split_results(rng):
  metrics = {"maj@1": rng.random(), "maj@8": rng.random(), "pass@8": rng.random(),
             "sample_accuracy": rng.random(), "num_examples": 40,
             "pass_curve": {"1": rng.random(), "8": rng.random()}}
  metrics["breakdown"] = {"shortcut_works": {
      value: {"maj@1": rng.random(), "maj@8": rng.random(), "n": n}
      for value, n in (("False", 12), ("True", 28))}}
  return metrics


def _write_run(directory, experiment, seed, rng):
  history = [{"iteration": i, "samples": 64 * i, "eval_maj@1": rng.random() if i != 2 else None,
              "solve_rate": 0.1 * i} for i in (1, 2, 3)]
  data = {"experiment": experiment, "seed": seed, "order": ["sft", "grpo", "orm"],
          "references": {"grpo": {"test": {"maj@1": REFERENCE}}},
          "stages": {"sft": {"algorithm": "sft", "parent": None, "history": [],
                             "results": {"test": _split_results(rng),
                                         "validation": _split_results(rng)}},
                     "grpo": {"algorithm": "grpo", "parent": "sft", "history": history,
                              "results": {"test": _split_results(rng),
                                          "validation": _split_results(rng)}},
                     "orm": {"algorithm": "orm", "parent": "sft", "history": [],
                             "results": None}}}
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "results.json"), "w") as f:
    json.dump(data, f)


@pytest.fixture
def runs(tmp_path):
  rng = np.random.default_rng(0)
  sweep = tmp_path / "sweep"
  for seed in SEEDS:
    _write_run(str(sweep / f"seed_{seed}"), "chain", seed, rng)
  (sweep / "sweep.json").write_text(json.dumps(
      {"seeds": list(SEEDS), "runs": {str(s): f"seed_{s}" for s in SEEDS}}))
  _write_run(str(tmp_path / "baseline"), "baseline", 0, rng)
  return str(sweep), str(tmp_path / "baseline")


def _per_seed(sweep):
  """{seed: results.json} read back with plain json."""
  out = {}
  for seed in SEEDS:
    with open(os.path.join(sweep, f"seed_{seed}", "results.json")) as f:
      out[seed] = json.load(f)
  return out


def _row(report, experiment, stage, split, field=None, value=None):
  found = [r for r in report.rows if (r["experiment"], r["stage"], r["split"], r["field"],
                                      r["value"]) == (experiment, stage, split, field, value)]
  assert len(found) == 1, (experiment, stage, split, field, value)
  return found[0]


def test_sweep_report_mean_std_equal_numpy(runs, tmp_path):
  sweep, baseline = runs
  report = tables.build_report([sweep, baseline])
  per_seed = _per_seed(sweep)
  for stage in ("sft", "grpo"):
    for split in ("test", "validation"):
      row = _row(report, "chain", stage, split)
      assert row["n"] == 3 and row["seeds"] == list(SEEDS) and row["examples"] == 40
      for metric in ("maj@1", "maj@8", "pass@8", "sample_accuracy"):
        values = [per_seed[s]["stages"][stage]["results"][split][metric] for s in SEEDS]
        stat = row["metrics"][metric]
        assert stat["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert stat["std"] == pytest.approx(np.std(values), abs=1e-12)  # ddof=0
        assert stat["n"] == 3
      assert set(row["metrics"]) == {"maj@1", "maj@8", "pass@8", "sample_accuracy"}
      for value in ("False", "True"):  # the breakdown groups
        group = _row(report, "chain", stage, split, "shortcut_works", value)
        values = [per_seed[s]["stages"][stage]["results"][split]["breakdown"]["shortcut_works"]
                  [value]["maj@1"] for s in SEEDS]
        assert group["metrics"]["maj@1"]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert group["metrics"]["maj@1"]["std"] == pytest.approx(np.std(values), abs=1e-12)
        assert group["examples"] == (12 if value == "False" else 28)
  assert not [r for r in report.rows if r["stage"] == "orm"]  # no policy results
  lone = _row(report, "baseline", "sft", "test")
  assert lone["n"] == 1 and lone["metrics"]["maj@1"]["std"] == 0.0
  # References beside ours, on the whole-split rows only.
  grpo = _row(report, "chain", "grpo", "test")
  assert grpo["reference"] == {"maj@1": REFERENCE}
  assert _row(report, "chain", "grpo", "validation")["reference"] == {}
  text = report.markdown()
  assert "numpy std, ddof=0" in text
  stat = grpo["metrics"]["maj@1"]
  assert f"| grpo | grpo | test | 3 | {stat['mean']:.3f} ± {stat['std']:.3f} (ref 0.550) |" in text
  for heading in ("## chain\n", "## baseline\n", "### by shortcut_works\n", "### per seed\n"):
    assert text.count(heading) == (2 if heading.startswith("###") else 1), heading
  # The sample-complexity curve: x = cumulative samples, y = eval_maj@1 (iteration 2 skipped).
  (curve,) = [c for c in report.curves if c["experiment"] == "chain"]
  assert curve["stage"] == "grpo" and curve["iteration"] == [1, 3]
  assert curve["samples"] == [64.0, 64.0 + 128 + 192]
  for at, iteration in enumerate((1, 3)):
    ys = [per_seed[s]["stages"]["grpo"]["history"][iteration - 1]["eval_maj@1"] for s in SEEDS]
    assert curve["mean"][at] == pytest.approx(np.mean(ys))
    assert curve["std"][at] == pytest.approx(np.std(ys))


def test_report_cli_writes_markdown_json_and_pngs(runs, tmp_path, capsys):
  sweep, baseline = runs
  out = tmp_path / "out"
  assert tables.main([sweep, baseline, "--out", str(out), "--metric", "maj@1"]) == 0
  assert "# rlthink report" in capsys.readouterr().out
  saved = json.loads((out / "report.json").read_text())
  assert saved == json.loads(json.dumps(tables.build_report([sweep, baseline]).to_json()))
  assert (out / "report.md").read_text().startswith("# rlthink report")
  import matplotlib.image
  for name in ("bars_test.png", "bars_validation.png", "samples_maj_at_1.png"):
    path = out / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    image = matplotlib.image.imread(str(path))
    assert min(image.shape[:2]) > 100 and np.ptp(image[..., :3]) > 0


def test_unfinished_seeds_duplicates_and_bad_paths(runs, tmp_path):
  sweep, _ = runs
  os.remove(os.path.join(sweep, "seed_2", "results.json"))  # still running
  assert _row(tables.build_report([sweep]), "chain", "sft", "test")["n"] == 2
  # The same run named twice counts once; another run of the same experiment and seed reporting
  # the same stages is an error.
  assert _row(tables.build_report([sweep, os.path.join(sweep, "seed_0")]),
              "chain", "sft", "test")["n"] == 2
  shutil.copytree(os.path.join(sweep, "seed_0"), str(tmp_path / "copy"))
  with pytest.raises(ValueError, match=r"experiment 'chain' seed 0: stages \['grpo', 'orm', "
                     r"'sft'\] are reported by both"):
    tables.build_report([sweep, str(tmp_path / "copy")])
  with pytest.raises(FileNotFoundError, match="neither a run directory"):
    tables.build_report([str(tmp_path)])
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "results.json").write_text('{"seed": 0}')
  with pytest.raises(ValueError, match="results.json: key 'stages'"):
    tables.build_report([str(tmp_path / "bad")])


def test_chunks_of_one_sweep_report_as_the_whole(runs, tmp_path):
  """A sweep run in two chunks (`--stages sft` and `--stages grpo,orm`, each in its own workdir)
  reports exactly as the sweep run whole."""
  sweep, _ = runs
  chunks = {"a": ["sft"], "b": ["grpo", "orm"]}
  for chunk, names in chunks.items():
    shutil.copytree(sweep, str(tmp_path / chunk))
    for seed in SEEDS:
      path = tmp_path / chunk / f"seed_{seed}" / "results.json"
      data = json.loads(path.read_text())
      data["order"] = names
      data["stages"] = {k: v for k, v in data["stages"].items() if k in names}
      path.write_text(json.dumps(data))
  whole = tables.build_report([sweep]).to_json()
  merged = tables.build_report([str(tmp_path / "a"), str(tmp_path / "b")]).to_json()
  assert merged["rows"] == whole["rows"]  # stages in the order of the chunks named
  assert merged["curves"] == whole["curves"]
