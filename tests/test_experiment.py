"""The experiment runner end to end: resume after SIGKILL, results and reports, stage params."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import run_fixtures as rf
from rlthink import gin_utils
from rlthink.experiment import Experiment, attach_tokenizer, load_stage_params


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  import gin
  gin.clear_config()


def _tiny_policy():
  gin_utils.parse(["models/tiny.gin"], list(rf.TINY_PARAMS))
  return attach_tokenizer(gin_utils.ModelSpec().build(gin_utils.MeshSpec().build()),
                          Experiment().tokenizer)


def _kill_when(proc, workdir: str, ready, log_path: str, timeout: float = 600) -> dict:
  """Polls `<workdir>/ei/checkpoints` until `ready(meta)` holds for a checkpoint written after
  the start, then SIGKILLs the run. Returns that checkpoint's meta."""
  phase_dir = os.path.join(workdir, "ei")
  before = set(rf.checkpoint_metas(phase_dir))
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    fresh = {i: m for i, m in rf.checkpoint_metas(phase_dir).items() if i not in before}
    hits = [m for _, m in sorted(fresh.items()) if ready(m)]
    if hits:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      return hits[0]
    if proc.poll() is not None:
      raise AssertionError(f"the run ended ({proc.returncode}) before the kill point:\n"
                           f"{rf.tail(log_path)}")
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  raise AssertionError(f"no checkpoint matched the kill point in {timeout}s:\n{rf.tail(log_path)}")


def test_run_killed_mid_iteration_and_resumed_matches_uninterrupted_run(tmp_path_factory,
                                                                        tmp_path):
  reference = rf.shared_run(tmp_path_factory)  # uninterrupted, same seed and settings
  workdir = str(tmp_path / "run")
  # Start from the finished SFT stage of the reference run and its config.gin (a workdir with
  # checkpoints but no config.gin is refused): SFT is not run again, EI runs here from SFT's
  # final checkpoint.
  os.makedirs(workdir)
  for name in ("sft", "data"):
    shutil.copytree(os.path.join(reference, name), os.path.join(workdir, name))
  shutil.copy(os.path.join(reference, "config.gin"), workdir)
  log = str(tmp_path / "train.log")
  env, cwd = rf.cli_env(), str(tmp_path)

  # Kill 1: in round 2's fine-tuning, after a mid-round checkpoint (optimizer state, batch
  # position), while the next steps run.
  with open(log, "ab") as out:
    proc = subprocess.Popen(rf.train_command(workdir), cwd=cwd, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
  first = _kill_when(proc, workdir, lambda m: m["iteration"] >= 1 and m["phase"] == "train"
                     and m["position"] > 0, log)
  assert proc.returncode == -signal.SIGKILL
  # Kill 2: after a round's last step was checkpointed, during the evaluation that follows.
  with open(log, "ab") as out:
    proc = subprocess.Popen(rf.train_command(workdir), cwd=cwd, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
  second = _kill_when(proc, workdir, lambda m: m["phase"] == "train"
                      and m["position"] == m["steps"], log)
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert (first["iteration"], first["position"]) < (second["iteration"], second["position"])

  rf.run_train(workdir, log)  # resume to the end

  got, want = rf.read_results(workdir)["stages"], rf.read_results(reference)["stages"]
  assert got["ei"]["history"] == want["ei"]["history"]  # every round's metrics, exactly
  assert got == want  # each stage's evaluation, history and place in the graph
  policy = _tiny_policy()
  for stage in ("sft", "ei"):
    resumed = load_stage_params(workdir, stage, policy)
    uninterrupted = load_stage_params(reference, stage, policy)
    assert jax.tree.structure(resumed) == jax.tree.structure(uninterrupted)
    jax.tree_util.tree_map_with_path(
        lambda path, a, b: np.testing.assert_array_equal(
            np.asarray(a), np.asarray(b), err_msg=f"{stage} {jax.tree_util.keystr(path)}"),
        resumed, uninterrupted)
  meta, ref_meta = (max(rf.checkpoint_metas(os.path.join(d, "ei")).items())[1]
                    for d in (workdir, reference))
  assert meta["dataset"] == ref_meta["dataset"]  # the accumulated EI training set


def test_results_table_and_plots_match_results_json(tmp_path_factory):
  workdir = rf.shared_run(tmp_path_factory)
  run = rf.read_results(workdir)
  assert run["order"] == ["sft", "ei"] and run["stages"]["ei"]["parent"] == "sft"
  results = {stage: entry["results"] for stage, entry in run["stages"].items()}
  assert sorted(results) == ["ei", "sft"]
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  assert table.startswith("# arithmetic: sft -> ei")
  for stage, splits in results.items():
    row = next(line for line in table.splitlines() if line.startswith(f"| {stage} | test |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == [f"{splits['test'][k]:.3f}"
                         for k in ("maj@1", "maj@4", "pass@4", "sample_accuracy")]
  for name in ("pass_at_k.png", "ei_history.png"):
    _assert_png(os.path.join(workdir, name))
  for stage in ("sft", "ei"):  # the evaluation after each stage, kept for a resumed run
    with open(os.path.join(workdir, "eval", f"{stage}.json")) as f:
      assert json.load(f)["results"] == results[stage]
  with open(os.path.join(workdir, "config.gin")) as f:
    assert "EIConfig.iterations = 2" in f.read()


def _assert_png(path):
  import matplotlib.image
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  assert np.ptp(image[..., :3]) > 0  # not a blank canvas


def test_load_stage_params_errors_name_the_stage_and_directory(tmp_path, tmp_path_factory):
  workdir = rf.shared_run(tmp_path_factory)
  policy = _tiny_policy()
  with pytest.raises(FileNotFoundError, match=r"no checkpoints of stage 'ei' under .*empty"):
    load_stage_params(str(tmp_path / "empty"), "ei", policy)
  absent = re.escape(os.path.join(workdir, "reinforce_xyz"))  # a stage the run does not have
  with pytest.raises(FileNotFoundError,
                     match=f"no checkpoints of stage 'reinforce_xyz' under {absent}$"):
    load_stage_params(workdir, "reinforce_xyz", policy)
  other = policy.replace(config=policy.config.replace(num_layers=3))
  with pytest.raises(ValueError, match="num_layers: checkpoint 2 vs run 3"):
    load_stage_params(workdir, "sft", other)


def test_experiment_rejects_unknown_stage():
  with pytest.raises(ValueError, match="unknown algorithm 'ppo2'"):
    Experiment(stages=("sft", "ppo2"))
  with pytest.raises(ValueError, match="empty"):
    Experiment(stages=())


def test_final_model_of_a_stage_is_evaluated_once(tmp_path, monkeypatch):
  """A driver's last per-iteration evaluation is of the stage's final model: the experiment
  reuses those full results for eval/<stage>.json instead of evaluating the same params again;
  a final model the driver did not evaluate is evaluated."""
  from rlthink.algorithms import expert_iteration, sft
  from rlthink.experiment import runner

  gin_utils.parse(["models/tiny.gin"], list(rf.MODEL_PARAMS) + [
      "Experiment.stages = ('sft', 'ei')", "Experiment.tokenizer = 'builtin'"])
  calls = []

  def fake_evaluate(policy, task, cfg, **extras):
    calls.append(policy.params)
    results = {"test": {"maj@1": 0.25 * len(calls), "pass@1": 0.5}}
    return results, {"test": [{"id": "0", "split": "test", "greedy_correct": True}]}

  def driver(evaluates_final):
    def run_stage(policy, cfg, ctx):
      final = policy.replace(params=jax.tree.map(lambda x: x + 0, policy.params))
      if evaluates_final:  # as EI's evaluation after its last round
        ctx.evaluate(final, 1, True)
      return final, [{"iteration": 1, "solve_rate": 0.5}]
    return run_stage

  monkeypatch.setattr(sft, "run_stage", driver(evaluates_final=False))
  monkeypatch.setattr(expert_iteration, "run_stage", driver(evaluates_final=True))
  monkeypatch.setattr(runner, "evaluate_with_predictions", fake_evaluate)
  monkeypatch.setattr(runner.report, "plot_pass_curves", lambda *a, **k: None)
  monkeypatch.setattr(runner.report, "plot_history", lambda *a, **k: None)
  results = runner.run(str(tmp_path), progress=False)
  assert len(calls) == 2  # sft's final model once, ei's final model once (not twice)
  assert results["ei"]["test"]["maj@1"] == 0.5  # the results of ei's in-stage evaluation
