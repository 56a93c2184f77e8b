"""Stage graphs: the forms a researcher writes, and every malformed graph failing before compute
with the stage (and the gin file) named; every shipped experiment file plans."""

import glob
import os

import pytest

from rlthink import gin_utils
from rlthink.experiment import ExperimentError, Mixture, parse_stages
from rlthink.experiment.spec import check_splits, run_order


def _parse(items):
  return parse_stages(items, "arithmetic", {"size": "tiny"}, "exp.gin")


def test_names_form_a_chain_and_dicts_name_their_parents():
  chain = _parse(["sft", "ei"])
  assert [(s.name, s.algorithm, s.parent) for s in chain] == [("sft", "sft", None),
                                                              ("ei", "ei", "sft")]
  arms = _parse([
      {"name": "sft", "splits": {"train": 3, "test": 1}},
      {"name": "rl_a", "algorithm": "grpo", "parent": "sft", "task_options": {"seed": 3}},
      {"name": "rl_b", "algorithm": "grpo"},  # no parent key: the previous stage
      {"name": "scratch", "algorithm": "sft", "parent": None, "task": "general_qa"},
      {"name": "orm", "parent": "sft"},
  ])
  assert [(s.name, s.algorithm, s.parent) for s in arms] == [
      ("sft", "sft", None), ("rl_a", "grpo", "sft"), ("rl_b", "grpo", "rl_a"),
      ("scratch", "sft", None), ("orm", "orm", "sft")]
  assert arms[0].splits == Mixture((("train", 3), ("test", 1)))
  assert arms[1].task_options == {"size": "tiny", "seed": 3}  # updates the experiment's
  assert arms[3].task == "general_qa" and arms[3].task_options == {}
  assert [s.evaluate for s in arms] == [True, True, True, True, False]  # reward models: no eval


@pytest.mark.parametrize("items, message", [
    (["sft", "ppo2"], r"exp.gin: stage 'ppo2': unknown algorithm 'ppo2'"),
    (["sft", "sft"], r"exp.gin: stage name 'sft' is used 2 times"),
    ([{"name": "rl", "algorithm": "grpo", "parent": "sfft"}],
     r"exp.gin: stage 'rl': parent 'sfft' is not a stage"),
    ([{"name": "a", "algorithm": "sft", "parent": "b"},
      {"name": "b", "algorithm": "sft", "parent": "a"}], r"exp.gin: stages .* form a cycle"),
    ([{"name": "rl-comp", "algorithm": "grpo"}], r"stage 'rl-comp': the name must be an identifier"),
    ([{"name": "sft", "split": "train"}], r"stage 'sft': unknown key\(s\) \['split'\]"),
    ([{"name": "sft", "splits": {"train": 2, "test": 0.5}}], r"all positive ints .* or all"),
    ([{"name": "sft", "splits": []}], r"must name at least one split"),
    ([], r"Experiment.stages is empty"),
])
def test_malformed_graphs_fail_naming_the_stage_and_file(items, message):
  with pytest.raises(ExperimentError, match=message):
    _parse(items)


def test_unknown_split_is_named_with_its_stage_and_the_tasks_splits():
  class FakeTask:
    splits = ("train", "test")

  stages = _parse([{"name": "sft", "splits": ["train", "comp"]}])
  with pytest.raises(ExperimentError, match=r"stage 'sft': task 'arithmetic' has no split "
                     r"'comp' \(its splits: \['train', 'test'\]\)"):
    check_splits(stages, {"sft": FakeTask()}, "exp.gin")


def test_run_order_puts_parents_first():
  stages = _parse([{"name": "child", "algorithm": "grpo", "parent": "sft"},
                   {"name": "sft", "parent": None}])
  assert [s.name for s in run_order(stages)] == ["sft", "child"]


def test_a_bad_graph_in_a_gin_file_names_the_file(tmp_path):
  from rlthink.experiment import Experiment
  path = tmp_path / "exp.gin"
  path.write_text("include 'models/tiny.gin'\n"
                  "Experiment.stages = [{'name': 'sft'}, {'name': 'rl', 'algorithm': 'grpo',"
                  " 'parent': 'sfx'}]\n")
  gin_utils.parse([str(path)], [])
  try:
    with pytest.raises(ExperimentError, match=rf"{path}:2: stage 'rl': parent 'sfx'"):
      Experiment()
  finally:
    import gin
    gin.clear_config()


EXPERIMENT_FILES = sorted(glob.glob(os.path.join(gin_utils.CONFIGS_DIR, "experiments", "*.gin")))


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=map(os.path.basename, EXPERIMENT_FILES))
def test_every_experiment_file_plans(path, tmp_path, monkeypatch):
  """Each shipped experiment parses into a stage graph whose configs all build (no compute)."""
  import gin
  from rlthink.experiment import Experiment, plan
  if os.path.basename(path) == "gsm8k_grpo_qwen2.5.gin":  # GSM8K's files where the recipe says
    data = tmp_path / "data" / "grade_school_math" / "data"
    data.mkdir(parents=True)
    for split in ("train", "test"):
      (data / f"{split}.jsonl").write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n')
    monkeypatch.chdir(tmp_path)
  gin_utils.parse([path], [])
  try:
    plans = plan(Experiment(), str(tmp_path))
  finally:
    gin.clear_config(clear_constants=True)
  names = [p.stage.name for p in plans]
  assert all(p.stage.parent is None or names.index(p.stage.parent) < names.index(p.stage.name)
             for p in plans)
  if os.path.basename(path) == "orm_tiny.gin":  # both reward models and START start from SFT
    assert [(p.stage.name, p.stage.parent) for p in plans] == [
        ("sft", None), ("orm", "sft"), ("prm", "sft"), ("start", "sft")]
