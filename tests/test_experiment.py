"""The experiment runner end to end: resume after SIGKILL, results and reports, stage params."""

import json
import os
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
  # Start from the finished SFT stage of the reference run (SFT restores it, then EI runs here).
  os.makedirs(workdir)
  for name in ("sft", "data"):
    shutil.copytree(os.path.join(reference, name), os.path.join(workdir, name))
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

  got, want = rf.read_results(workdir), rf.read_results(reference)
  assert got["history"]["ei"] == want["history"]["ei"]  # every round's metrics, exactly
  assert got["results"] == want["results"]
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
  results = rf.read_results(workdir)["results"]
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
      assert json.load(f) == results[stage]
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
  with pytest.raises(ValueError, match="unknown algorithm 'reinforce_xyz'"):
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
  import rlthink.tasks
  from rlthink import algorithms, experiment

  gin_utils.parse(["models/tiny.gin"], list(rf.MODEL_PARAMS) + [
      "Experiment.stages = ('sft', 'ei')", "Experiment.tokenizer = 'builtin'"])
  calls = []

  def fake_evaluate(policy, task, cfg):
    calls.append(policy.params)
    return {"test": {"maj@1": 0.25 * len(calls), "pass@1": 0.5}}

  def runner(evaluates_final):
    def run(policy, task, opt_cfg, workdir, *, evaluate_fn=None, progress=True):
      final = policy.replace(params=jax.tree.map(lambda x: x + 0, policy.params))
      if evaluates_final:  # as EI's on_iteration after its last round
        evaluate_fn(final)
      return final, [{"solve_rate": 0.5}]
    return run

  monkeypatch.setattr(rlthink.tasks, "get", lambda name, **kw: object())
  monkeypatch.setattr(experiment, "evaluate", fake_evaluate)
  monkeypatch.setattr(algorithms, "stage_runner",
                      lambda stage: runner(evaluates_final=stage == "ei"))
  monkeypatch.setattr(experiment.report, "plot_pass_curves", lambda *a: None)
  monkeypatch.setattr(experiment.report, "plot_history", lambda *a: None)
  results = experiment.run(str(tmp_path), progress=False)
  assert len(calls) == 2  # sft's final model once, ei's final model once (not twice)
  assert results["ei"]["test"]["maj@1"] == 0.5  # the results of ei's in-stage evaluation
