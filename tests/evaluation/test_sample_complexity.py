"""Sample complexity from saved histories: the completions an RL stage samples to reach 90% of its
final gain, checked against numbers worked out by hand, and the report's curves, gain table and
overlay plot of chosen stages."""

import json
import os

import numpy as np
import pytest

from rlthink.evaluation import sample_complexity as sc
from rlthink.evaluation import tables

# EI: 3 rounds of 1000 completions; maj@1 0.40 (SFT) -> 0.50, 0.58, 0.60. Gain 0.20, 90%: 0.58,
# first reached at round 2 exactly: 2000 completions.
EI = [{"iteration": i, "samples": 1000, "eval_maj@1": y} for i, y in ((1, 0.5), (2, 0.58),
                                                                      (3, 0.6))]
# PPO: 8 iterations of 500 completions, evaluated every 2nd (4 points): 0.42, 0.46, 0.52, 0.50.
# Gain 0.10, 90%: 0.49, between (2000, 0.46) and (3000, 0.52): 2000 + 0.03 / 0.06 * 1000 = 2500.
PPO = [{"iteration": i, "samples": 500, "eval_maj@1": {2: 0.42, 4: 0.46, 6: 0.52, 8: 0.50}.get(i)}
       for i in range(1, 9)]


def test_history_points_accumulate_samples_up_to_each_evaluation():
  assert sc.history_points(PPO, "maj@1") == [(2, 1000.0, 0.42), (4, 2000.0, 0.46),
                                             (6, 3000.0, 0.52), (8, 4000.0, 0.50)]


def test_samples_to_gain_by_hand():
  xs, ys = [1000.0, 2000.0, 3000.0], [0.5, 0.58, 0.6]
  assert sc.samples_to_gain(xs, ys, 0.4) == pytest.approx(2000.0)
  assert sc.samples_to_gain(xs, ys, 0.4, fraction=0.5) == pytest.approx(1000.0)  # 0.50 at 1000
  # 25%: 0.45, on the first segment from the start (0, 0.40) to (1000, 0.50).
  assert sc.samples_to_gain(xs, ys, 0.4, fraction=0.25) == pytest.approx(500.0)
  ppo = sc.history_points(PPO, "maj@1")
  assert sc.samples_to_gain([x for _, x, _ in ppo], [y for _, _, y in ppo],
                            0.4) == pytest.approx(2500.0)
  assert sc.samples_to_gain(xs, [0.3, 0.35, 0.4], 0.4) is None  # no gain
  with pytest.raises(ValueError, match="fraction=0"):
    sc.samples_to_gain(xs, ys, 0.4, fraction=0.0)


def _run(directory, seed, ei_shift=0.0):
  ei = [dict(h, **{"eval_maj@1": h["eval_maj@1"] + ei_shift}) for h in EI]
  sft = {"test": {"maj@1": 0.4 + ei_shift, "num_examples": 10}}
  data = {"experiment": "havrilla", "seed": seed, "order": ["sft", "ei", "ppo"],
          "stages": {"sft": {"algorithm": "sft", "parent": None, "history": [], "results": sft},
                     "ei": {"algorithm": "ei", "parent": "sft", "history": ei,
                            "results": {"test": {"maj@1": 0.6 + ei_shift}}},
                     "ppo": {"algorithm": "ppo", "parent": "sft", "history": PPO,
                             "results": {"test": {"maj@1": 0.5}}}}}
  os.makedirs(directory)
  with open(os.path.join(directory, "results.json"), "w") as f:
    json.dump(data, f)
  return directory


def test_report_gives_each_rl_stage_its_gain_and_overlays_the_chosen_curves(tmp_path):
  # Seed 1's EI curve and start are seed 0's shifted by +0.1: the same 2000 completions.
  paths = [_run(str(tmp_path / "s0"), 0), _run(str(tmp_path / "s1"), 1, ei_shift=0.1)]
  report = tables.build_report(paths, curve_stages=["ei", "ppo"])
  gains = {c["stage"]: c["gain"] for c in report.curves}
  assert set(gains) == {"ei", "ppo"}
  assert gains["ei"]["values"] == pytest.approx([2000.0, 2000.0])
  assert gains["ei"]["seeds"] == [0, 1] and gains["ei"]["mean"] == pytest.approx(2000.0)
  assert gains["ei"]["start"]["mean"] == pytest.approx(0.45)
  assert gains["ei"]["final"]["mean"] == pytest.approx(0.65)
  assert gains["ei"]["of_mean_curve"] == pytest.approx(2000.0)
  # PPO starts from the SFT of each seed: 0.40 and 0.50; seed 1 ends at 0.50, no gain.
  assert gains["ppo"]["values"] == pytest.approx([2500.0]) and gains["ppo"]["seeds"] == [0]
  assert gains["ppo"]["std"] == 0.0
  # The report JSON carries the numbers, the markdown a table of them.
  saved = report.to_json()
  assert [c["gain"]["mean"] for c in saved["curves"]] == pytest.approx([2000.0, 2500.0])
  text = report.markdown()
  assert "### completions sampled to reach 90% of the final maj@1 gain" in text
  assert "| ei | 0.450 ± 0.050 | 0.650 ± 0.050 | 2000 ± 0 (n=2) | 2000 |" in text
  paths = report.write(str(tmp_path / "out"))
  assert os.path.getsize(paths["samples_maj_at_1.png"]) > 0
  with pytest.raises(ValueError, match=r"no maj@1 curve for stages \['rcrl'\].*'ei', 'ppo'"):
    tables.build_report(paths=[str(tmp_path / "s0")], curve_stages=["ei", "rcrl"])


def test_a_stage_whose_start_is_not_reported_has_no_gain(tmp_path):
  path = _run(str(tmp_path / "s0"), 0)
  with open(os.path.join(path, "results.json")) as f:
    data = json.load(f)
  del data["stages"]["sft"]  # a chunk that ran SFT unreported
  data["order"].remove("sft")
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(data, f)
  (curve, _) = tables.build_report([path]).curves
  assert curve["gain"]["start"] is None and curve["gain"]["mean"] is None
  assert np.isfinite(curve["mean"]).all()
