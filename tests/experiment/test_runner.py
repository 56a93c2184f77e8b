"""The experiment runner on a cheap fake algorithm: a parent runs once and every child starts
from its final params, stage gin scopes, resume never re-runs a finished stage, a changed config
of a stage is an error naming the binding (unless overridden), seeds offset every stage's seed,
cached evaluations are keyed by their config."""

import json
import os

import gin
import jax
import numpy as np
import pytest

import fake_algorithm as fake
from rlthink import algorithms, gin_utils
from rlthink.experiment import Experiment, StageChangedError, runner, spec
from rlthink.train.checkpoint import CorruptCheckpointError

ARMS = ("Experiment.stages = [{'name': 'sft', 'algorithm': 'fake'},"
        " {'name': 'arm_a', 'algorithm': 'fake', 'parent': 'sft'},"
        " {'name': 'arm_b', 'algorithm': 'fake', 'parent': 'sft'},"
        " {'name': 'arm_c', 'algorithm': 'fake', 'parent': 'sft'}]")


@pytest.fixture(autouse=True)
def _fake(monkeypatch):
  monkeypatch.setitem(algorithms.ALGORITHMS, "fake", algorithms.Algorithm(
      "fake_algorithm:FakeConfig", "fake_algorithm:run_stage"))
  gin_utils.register_config(fake.FakeConfig)
  fake.CALLS.clear()
  evaluations = []

  def fake_evaluate(policy, task, cfg, **extras):
    evaluations.append(cfg)
    mean = float(np.mean([np.mean(x) for x in jax.tree.leaves(policy.params)]))
    results = {"test": {"maj@1": mean, "pass@1": mean, "sample_accuracy": mean}}
    return results, {"test": [{"id": "0", "split": "test", "greedy_correct": True}]}

  monkeypatch.setattr(runner, "evaluate_with_predictions", fake_evaluate)
  monkeypatch.setattr(runner.report, "plot_pass_curves", lambda *a, **k: None)
  monkeypatch.setattr(runner.report, "plot_history", lambda *a, **k: None)
  yield evaluations
  gin.clear_config()


def _parse(*params):
  gin_utils.parse(["models/tiny.gin"], ["ModelSpec.overrides = {'num_layers': 1}",
                                        "Experiment.task_options = {'size': 'tiny'}",
                                        "EvalConfig.splits = ('test',)", *params])


def _equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_parent_runs_once_and_every_child_starts_from_its_final_params(tmp_path, _fake):
  _parse(ARMS, "arm_b/FakeConfig.delta = 5.0", "FakeConfig.iterations = 3",
         "arm_c/EvalConfig.eval_every = 2")
  results = runner.run(str(tmp_path), progress=False)
  names = [c["name"] for c in fake.CALLS]
  assert names == ["sft", "arm_a", "arm_b", "arm_c"]  # the parent once
  parent_final = jax.tree.map(lambda x: x + 1.0, fake.CALLS[0]["start"])
  for call in fake.CALLS[1:]:
    assert _equal(call["start"], parent_final), call["name"]
  assert [c["cfg"].delta for c in fake.CALLS] == [1.0, 1.0, 5.0, 1.0]  # arm_b's scope only
  assert all(c["cfg"].iterations == 3 for c in fake.CALLS)  # unscoped: every stage
  assert sorted(results) == ["arm_a", "arm_b", "arm_c", "sft"]
  assert results["arm_b"]["test"]["maj@1"] == pytest.approx(results["sft"]["test"]["maj@1"] + 5)


def test_resume_never_reruns_a_finished_stage_nor_its_evaluation(tmp_path, _fake):
  _parse(ARMS)
  first = runner.run(str(tmp_path), progress=False)
  evaluated = len(_fake)
  fake.CALLS.clear()
  _parse(ARMS)
  assert runner.run(str(tmp_path), progress=False) == first
  assert fake.CALLS == [] and len(_fake) == evaluated
  _parse(ARMS, "EvalConfig.max_examples = 3")  # another EvalConfig: evaluated again, not trained
  runner.run(str(tmp_path), progress=False)
  assert fake.CALLS == [] and len(_fake) == evaluated + 4


def test_changed_config_of_a_finished_stage_is_an_error_naming_the_binding(tmp_path):
  _parse(ARMS)
  runner.run(str(tmp_path), progress=False)
  fake.CALLS.clear()
  _parse(ARMS, "arm_a/FakeConfig.delta = 3.0")
  with pytest.raises(StageChangedError, match=r"stage 'arm_a' .*FakeConfig.delta: 1.0 -> 3.0"):
    runner.run(str(tmp_path), progress=False)
  assert fake.CALLS == []
  # Allowed: the stage runs again from its parent's final params, read back from its checkpoint.
  results = runner.run(str(tmp_path), progress=False, overrides=["arm_a.FakeConfig.delta"])
  assert [c["name"] for c in fake.CALLS] == ["arm_a"]
  assert results["arm_a"]["test"]["maj@1"] == pytest.approx(results["sft"]["test"]["maj@1"] + 3)


def test_experiment_seed_offsets_every_stage_seed(tmp_path):
  _parse(ARMS, "FakeConfig.seed = 10", "Experiment.seed = 2")
  runner.run(str(tmp_path), progress=False)
  assert [c["cfg"].seed for c in fake.CALLS] == [12] * 4


def test_eval_every_evaluates_every_nth_and_the_last_iteration(tmp_path):
  _parse("Experiment.stages = ['fake']", "FakeConfig.iterations = 5", "EvalConfig.eval_every = 2")
  runner.run(str(tmp_path), progress=False)
  import json
  with open(tmp_path / "results.json") as f:
    history = json.load(f)["stages"]["fake"]["history"]
  assert [h["iteration"] for h in history if "eval_maj@1" in h] == [2, 4, 5]


def _damage_newest_checkpoint(stage_directory):
  """Flips bytes in one file of the stage's newest checkpoint (its checksums then fail)."""
  root = os.path.join(stage_directory, "checkpoints")
  step = max(int(n) for n in os.listdir(root) if n.isdigit())
  for folder, _, names in sorted(os.walk(os.path.join(root, str(step), "state"))):
    for name in sorted(names):
      path = os.path.join(folder, name)
      if os.path.getsize(path) > 16:
        with open(path, "r+b") as f:
          data = f.read(16)
          f.seek(0)
          f.write(bytes(b ^ 0xFF for b in data))
        return step
  raise AssertionError(f"no file to damage under {root}")


def test_a_finished_stage_whose_final_checkpoint_is_corrupt_runs_again(tmp_path, _fake):
  _parse(ARMS)
  first = runner.run(str(tmp_path), progress=False)
  step = _damage_newest_checkpoint(str(tmp_path / "arm_b"))
  policy = runner.attach_tokenizer(runner.build_policy(), "builtin")
  with pytest.raises(CorruptCheckpointError, match=r"stage 'arm_b'.*rlthink train"):
    runner.load_stage_params(str(tmp_path), "arm_b", policy)
  assert os.path.isdir(tmp_path / "arm_b" / "checkpoints" / f"{step}.corrupt")  # kept aside

  _damage_newest_checkpoint(str(tmp_path / "sft"))
  fake.CALLS.clear()
  _parse(ARMS)
  assert runner.run(str(tmp_path), progress=False) == first
  assert [c["name"] for c in fake.CALLS] == ["sft", "arm_b"]  # only the damaged stages


@pytest.mark.parametrize("binding, message", [
    ("arm_c/EvalConfig.temperature = -1.0", "EvalConfig.temperature must be a finite number"),
    ("arm_b/EvalConfig.top_p = 0.0", "EvalConfig.top_p must be None or a number in"),
    ("arm_a/EvalConfig.max_new_tokens = 0", "EvalConfig.max_new_tokens must be a positive int"),
])
def test_a_bad_evaluation_value_of_a_late_stage_stops_before_any_stage_runs(tmp_path, _fake,
                                                                           binding, message):
  _parse(ARMS, binding)
  with pytest.raises(ValueError, match=message):
    runner.run(str(tmp_path), progress=False)
  assert fake.CALLS == [] and not (tmp_path / "sft").exists()


@pytest.mark.parametrize("binding, message", [
    ("arm_a/EvalConfig.metrics = ('maj@1', 'rerank@k')",
     "EvalConfig.reward_model_stage = 'arm_b' names a stage that runs after it"),
    ("arm_a/EvalConfig.metrics = ('maj@1', 'cross_generation')",
     "EvalConfig.readers = 'nowhere' names no stage of the experiment"),
])
def test_a_stage_that_reads_a_later_or_unknown_stage_stops_before_any_stage_runs(
    tmp_path, _fake, binding, message):
  _parse(ARMS, binding, "arm_a/EvalConfig.reward_model_stage = 'arm_b'",
         "arm_a/EvalConfig.readers = ('sft', 'nowhere')")
  with pytest.raises(spec.ExperimentError, match=message):
    runner.run(str(tmp_path), progress=False)
  assert fake.CALLS == [] and not (tmp_path / "sft").exists()


def test_only_stages_runs_what_they_need_and_reports_them_alone(tmp_path, _fake):
  """A chunk (`--stages arm_b`) trains the parent unreported; the chunks' results are the whole
  run's, and a later whole run in the chunk's workdir trains only what is left."""
  _parse(ARMS)
  whole = runner.run(str(tmp_path / "whole"), progress=False)
  fake.CALLS.clear()
  _parse(ARMS, "Experiment.only_stages = ['arm_b']")
  chunk = runner.run(str(tmp_path / "chunk"), progress=False)
  assert [c["name"] for c in fake.CALLS] == ["sft", "arm_b"]
  assert chunk == {"arm_b": whole["arm_b"]}
  saved = json.loads((tmp_path / "chunk" / "results.json").read_text())
  assert saved["order"] == ["arm_b"] and list(saved["stages"]) == ["arm_b"]
  fake.CALLS.clear()
  _parse(ARMS)
  assert runner.run(str(tmp_path / "chunk"), progress=False) == whole
  assert [c["name"] for c in fake.CALLS] == ["arm_a", "arm_c"]
  _parse(ARMS, "Experiment.only_stages = ['arm_d']")
  with pytest.raises(spec.ExperimentError, match=r"only_stages names no stage: \['arm_d'\]"):
    Experiment()


def test_a_final_evaluation_waits_for_the_later_stage_it_reranks_with(tmp_path, _fake,
                                                                      monkeypatch):
  """arm_a is reranked by the ORM of arm_b, trained after it (on arm_a's samples): arm_a's
  evaluations while it trains take only its iteration metrics, its final evaluation runs once
  arm_b has, and the cached evaluation is reused until arm_b changes."""
  import rlthink.rewards
  loaded = []
  monkeypatch.setattr(rlthink.rewards, "load_reward_model", lambda directory, kind, policy: (
      loaded.append((os.path.basename(directory), [c["name"] for c in fake.CALLS])) or "orm"))
  graph = ("Experiment.stages = [{'name': 'sft', 'algorithm': 'fake'},"
           " {'name': 'arm_a', 'algorithm': 'fake', 'parent': 'sft'},"
           " {'name': 'arm_b', 'algorithm': 'fake', 'parent': 'arm_a'}]")
  rerank = ("arm_a/EvalConfig.metrics = ('maj@1', 'rerank@k')",
            "arm_a/EvalConfig.reward_model_stage = 'arm_b'")
  _parse(graph, *rerank)
  with pytest.raises(spec.ExperimentError, match="'arm_b' names a stage that runs after it and "
                     "its evaluations during training read it"):
    runner.run(str(tmp_path), progress=False)
  _parse(graph, *rerank, "arm_a/EvalConfig.iteration_metrics = ('maj@1',)")
  results = runner.run(str(tmp_path), progress=False)
  assert loaded == [("arm_b", ["sft", "arm_a", "arm_b"])]  # after arm_b trained
  metrics = [cfg.metrics for cfg in _fake]
  # sft, arm_a while it trains (the fake's iterations share params: evaluated once), arm_b,
  # then arm_a's final evaluation.
  full = ("maj@1", "maj@k", "pass@k")
  assert metrics == [full, ("maj@1",), full, ("maj@1", "rerank@k")]
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved["order"] == ["sft", "arm_a", "arm_b"] and list(results) == saved["order"]
  assert saved["stages"]["arm_a"]["results"] == results["arm_a"]
  # Cached while arm_b stays the same; evaluated again (arm_a not retrained) when it changes.
  _fake.clear()
  _parse(graph, *rerank, "arm_a/EvalConfig.iteration_metrics = ('maj@1',)")
  assert runner.run(str(tmp_path), progress=False) == results and _fake == []
  _parse(graph, *rerank, "arm_a/EvalConfig.iteration_metrics = ('maj@1',)",
         "arm_b/FakeConfig.delta = 2.0")
  fake.CALLS.clear()
  runner.run(str(tmp_path), progress=False, overrides=["arm_b.FakeConfig.delta"])
  assert [c["name"] for c in fake.CALLS] == ["arm_b"]
  assert [cfg.metrics for cfg in _fake][-1] == ("maj@1", "rerank@k")


def test_a_chunk_trains_what_its_stages_evaluation_reads_only_for_its_own_stages(tmp_path, _fake,
                                                                               monkeypatch):
  """sft is reranked by arm_b: a chunk reporting sft trains arm_b; one that runs sft only as
  arm_a's parent does not (sft is not evaluated there)."""
  import rlthink.rewards
  monkeypatch.setattr(rlthink.rewards, "load_reward_model", lambda *args: "orm")
  rerank = ("sft/EvalConfig.metrics = ('maj@1', 'rerank@k')",
            "sft/EvalConfig.iteration_metrics = ('maj@1',)",
            "sft/EvalConfig.reward_model_stage = 'arm_b'")
  _parse(ARMS, *rerank, "Experiment.only_stages = ['arm_a']")
  assert list(runner.run(str(tmp_path / "a"), progress=False)) == ["arm_a"]
  assert [c["name"] for c in fake.CALLS] == ["sft", "arm_a"]
  fake.CALLS.clear()
  _parse(ARMS, *rerank, "Experiment.only_stages = ['sft']")
  assert list(runner.run(str(tmp_path / "b"), progress=False)) == ["sft"]
  assert [c["name"] for c in fake.CALLS] == ["sft", "arm_b"]
