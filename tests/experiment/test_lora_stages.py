"""A LoRA stage's result read back from its workdir: its checkpoints hold only adapters, and
`load_stage_params` puts them on what the stage started from (its parent's result, or the
initial model built again from its stage.json), so a run stopped after a LoRA stage resumes its
children from exactly that stage's final params, and `rlthink convert` exports it merged."""

import json
import os
import shutil

import gin
import jax
import numpy as np
import pytest

from rlthink import cli, gin_utils
from rlthink.experiment import load_stage_params, runner
from rlthink.models import lora
from rlthink.policy import load_pretrained

PARENT = "{'name': 'sft', 'algorithm': 'sft', 'evaluate': False}"
CHILD = "{'name': 'tune', 'algorithm': 'sft', 'parent': 'sft', 'evaluate': False}"
PARAMS = (
    "ModelSpec.overrides = {'num_layers': 1}",
    "Experiment.task_options = {'size': 'tiny', 'seed': 0}",
    "Experiment.tokenizer = 'builtin'", "Experiment.seed = 3",
    "SFTConfig.steps = 2", "SFTConfig.batch_size = 4", "SFTConfig.max_length = 96",
    "SFTConfig.log_every = 2", "SFTConfig.checkpoint_every = 2",
    "OptimizerConfig.learning_rate = 1e-2", "OptimizerConfig.warmup_steps = 0",
    # The parent adapts attention, the child the MLP on top of the parent's merged result.
    "sft/OptimizerConfig.lora = @sft/LoRAConfig()", "sft/LoRAConfig.rank = 2",
    "sft/LoRAConfig.targets = ('q_proj', 'v_proj')",
    "tune/OptimizerConfig.lora = @tune/LoRAConfig()", "tune/LoRAConfig.rank = 2",
    "tune/LoRAConfig.targets = ('up_proj',)",
)


def _parse(*stages):
  gin_utils.parse(["models/tiny.gin"], [*PARAMS, f"Experiment.stages = [{', '.join(stages)}]"])


def _run(workdir, *stages) -> dict:
  """Runs the experiment of `stages`; returns {stage: (start params, final params)} of the
  stages that trained, as the runner passed and got them (host copies)."""
  _parse(*stages)
  seen, real = {}, runner._run_stage

  def spy(p, policy, *args):
    current, history = real(p, policy, *args)
    seen[p.stage.name] = (_host(policy.params), _host(current.params))
    return current, history

  runner._run_stage = spy
  try:
    runner.run(str(workdir), progress=False)
  finally:
    runner._run_stage = real
  return seen


def _host(tree):
  return jax.tree.map(np.asarray, tree)


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, _host(a), _host(b))


def _command_policy():
  """The model a command (eval, sample, convert) builds from the gin config: the initial one
  with seed offset 0, not the experiment's (Experiment.seed = 3)."""
  _parse(PARENT)
  return runner.attach_tokenizer(runner.build_policy(), "builtin")


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
  """A run that ended (or was killed) after its LoRA stage "sft": (workdir, what it trained)."""
  workdir = tmp_path_factory.mktemp("lora_run")
  seen = _run(workdir, PARENT)
  yield str(workdir), seen
  gin.clear_config()


@pytest.fixture(scope="module")
def resumed_run(parent_run, tmp_path_factory):
  """The run of `parent_run` resumed with a child of its LoRA stage, itself a LoRA stage (added
  to the experiment, or run again after its directory was lost): (workdir, what it trained)."""
  workdir = str(tmp_path_factory.mktemp("lora_resumed") / "run")
  shutil.copytree(parent_run[0], workdir)
  return workdir, _run(workdir, PARENT, CHILD)


def test_a_lora_stage_reads_back_as_the_run_returned_it(parent_run):
  workdir, seen = parent_run
  with open(os.path.join(workdir, "sft", "stage.json")) as f:
    record = json.load(f)["lora"]
  assert record["parent"] is None and record["seed_offset"] == 3
  assert record["config"]["targets"] == ["q_proj", "v_proj"]
  loaded = load_stage_params(workdir, "sft", _command_policy())  # not the run's initial params
  assert lora.has_adapters(loaded)
  _assert_equal(loaded, seen["sft"][1])
  _assert_equal(lora.merge(loaded), lora.merge(seen["sft"][1]))
  _, adapters = lora.split(seen["sft"][1])
  assert all(np.any(x) for x in jax.tree.leaves(adapters))  # trained: B moved off zero


def test_a_resumed_run_starts_the_child_of_a_lora_stage_from_its_result(parent_run, resumed_run):
  _, parent = parent_run
  workdir, seen = resumed_run
  assert sorted(seen) == ["tune"]  # the parent is not trained again
  _assert_equal(seen["tune"][0], parent["sft"][1])  # read back from its checkpoint, exactly
  # The child's result: through its LoRA parent, down to the initial model.
  _assert_equal(load_stage_params(workdir, "tune", _command_policy()), seen["tune"][1])


def test_a_lora_stage_whose_parent_changed_since_is_an_error(resumed_run, tmp_path):
  workdir, _ = resumed_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  # The parent run again since with other settings: its result is not what the child trained on.
  path = copy / "sft" / "stage.json"
  record = json.loads(path.read_text())
  record["fingerprint"]["SFTConfig.steps"] = 3
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=r"LoRA stage 'tune' .*stage 'sft'.*re-run"):
    load_stage_params(str(copy), "tune", _command_policy())


def test_convert_of_a_lora_stage_exports_its_merged_model(parent_run, tmp_path, capsys, cli_state):
  workdir, seen = parent_run
  out_dir = tmp_path / "hf"
  code = cli.main(["convert", "--workdir", workdir, "--stage", "sft", "--out", str(out_dir)])
  err = capsys.readouterr().err
  assert code == 0, err
  exported = load_pretrained(str(out_dir)).params
  merged = _host(lora.merge(seen["sft"][1]))
  assert jax.tree.structure(exported) == jax.tree.structure(merged)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-6), exported,
               merged)
