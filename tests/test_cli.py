"""The `rlthink` command line at tiny scale: every subcommand, --help, and bad input.

`train` runs in a subprocess (the session's shared run, see run_fixtures); the other subcommands
run in-process through `cli.main(argv)`, which is what the console script calls.
"""

import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import run_fixtures as rf
import rlthink
from rlthink import cli, gin_utils, tasks
from rlthink.algorithms import ALGORITHMS
from rlthink.experiment import Experiment, attach_tokenizer, load_stage_params

SUBCOMMANDS = ("train", "sample", "eval", "convert", "bench", "data")
PROMPTS = ("Ann has 3 pens. She gets 4 more. How many pens now?\n",
           "Bob has 9 cards. He loses 2. He finds 5 more. How many cards now?\n")


@pytest.fixture(autouse=True)
def _restore_global_state(cli_state):
  """Every test here runs `rlthink.cli.main` (see conftest's cli_state)."""



def _main(argv, capsys):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def _stage_policy(workdir, stage):
  gin_utils.parse(["models/tiny.gin"], list(rf.MODEL_PARAMS))
  policy = attach_tokenizer(gin_utils.ModelSpec().build(gin_utils.MeshSpec().build()),
                            Experiment().tokenizer)
  return policy.replace(params=load_stage_params(workdir, stage, policy))


# --- help ---------------------------------------------------------------------------------------

def test_help_lists_every_subcommand_and_each_subcommand_has_help(capsys):
  proc = subprocess.run([sys.executable, "-m", "rlthink.cli", "--help"], capture_output=True,
                        text=True, env=rf.cli_env(), timeout=120)
  assert proc.returncode == 0, proc.stderr
  for name in SUBCOMMANDS:
    assert name in proc.stdout
  for name in SUBCOMMANDS:
    with pytest.raises(SystemExit) as exit_info:
      cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rlthink {name}")
    if name != "bench":
      assert "--gin_param" in out


def test_version_and_list_name_the_packaged_experiments_models_tasks_algorithms(tmp_path,
                                                                               capsys,
                                                                               monkeypatch):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--version"])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out.strip() == f"rlthink {rlthink.__version__}"
  monkeypatch.chdir(tmp_path)  # the packaged configs, from any cwd
  (tmp_path / "mine" / "experiments").mkdir(parents=True)
  (tmp_path / "mine" / "experiments" / "my_run.gin").write_text("ModelSpec.seed = 1\n")
  code, out, _ = _main(["list", "--gin_search_path", tmp_path / "mine"], capsys)
  assert code == 0
  sections = {}
  for line in out.splitlines():
    if line.startswith("  "):
      sections[title].append(line.strip())
    else:
      title = line.split(" ")[0]
      sections[title] = []
  assert {"experiments/quickstart.gin", "experiments/my_run.gin"} <= set(sections["experiments"])
  assert "models/tiny.gin" in sections["models"]
  assert sections["tasks"] == sorted(tasks.FAMILIES)
  assert sections["algorithms"] == sorted(ALGORITHMS)


def test_train_resolves_files_through_gin_search_path(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "bad.gin").write_text("include 'models/tiny.gin'\nSFTConfig.stpes = 3\n")
  code, _, err = _main(["train", "--workdir", tmp_path / "w", "--gin_file", "bad.gin",
                        "--gin_search_path", tmp_path / "mine"], capsys)
  # found (and its include in the packaged configs): the error is the binding, not the file
  assert code == 2 and "bad.gin:2: unknown binding 'SFTConfig.stpes'" in err, err


# --- train (the shared run) ---------------------------------------------------------------------

def test_train_writes_checkpoints_metrics_results_and_plots(tmp_path_factory):
  workdir = rf.shared_run(tmp_path_factory)
  for name in ("config.gin", "results.json", "results.md", "pass_at_k.png", "ei_history.png",
               "eval/sft.json", "eval/ei.json", "sft/metrics.jsonl", "ei/metrics.jsonl"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  for stage in ("sft", "ei"):
    assert any(n.startswith("events.out.tfevents")
               for n in os.listdir(os.path.join(workdir, stage, "tb")))
  # SFTConfig.steps = 40, checkpoint_every = 20; the Checkpointer keeps the last two.
  assert sorted(rf.checkpoint_metas(os.path.join(workdir, "sft"))) == [20, 40]
  with open(os.path.join(workdir, "sft", "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [r["step"] for r in logged] == list(range(1, 41))  # every step, synced every 10
  assert logged[-1]["sft/loss"] < logged[0]["sft/loss"] - 1.0  # SFT learned the format
  ei_meta = max(rf.checkpoint_metas(os.path.join(workdir, "ei")).items())[1]
  assert (ei_meta["iteration"], ei_meta["phase"]) == (2, "done")  # both rounds finished


# --- sample -------------------------------------------------------------------------------------

def _greedy_reference(policy, prompt: str, max_new_tokens: int) -> tuple[str, str]:
  """Greedy decoding by full forwards (no KV cache): the independent reference of the sampler.

  The model is causal, so the logits at position n-1 ignore the zero padding after it; one
  padded shape [8 rows (one per device), 128] serves every prompt and step."""
  ids = list(policy.tokenizer(prompt)["input_ids"])
  assert len(ids) + max_new_tokens <= 128
  tokens = np.zeros((8, 128), np.int32)
  tokens[:, :len(ids)] = ids
  n, new = len(ids), []
  for _ in range(max_new_tokens):
    logits = np.asarray(policy.logits(jnp.asarray(tokens)))[0, n - 1]
    token = int(np.argmax(logits))
    new.append(token)
    tokens[:, n] = token
    n += 1
    if token in policy.config.eos_token_id:
      return policy.tokenizer.decode(new, skip_special_tokens=True), "stop"
  return policy.tokenizer.decode(new, skip_special_tokens=True), "length"


def test_sample_from_a_stage_is_greedy_decoding_of_its_checkpoint(tmp_path_factory, tmp_path,
                                                                 capsys):
  workdir = rf.shared_run(tmp_path_factory)
  params = rf.MODEL_PARAMS + ("SampleConfig.temperature = 0.0",
                              "SampleConfig.max_new_tokens = 16")
  prompts_file = tmp_path / "prompts.txt"
  prompts_file.write_text(PROMPTS[1] + "\n")
  code, out, err = _main(["sample", "--workdir", workdir, "--stage", "ei", "--prompt",
                          PROMPTS[0], "--prompts_file", prompts_file, *rf.gin_args(params)],
                         capsys)
  assert code == 0, err
  records = [json.loads(line) for line in out.splitlines()]
  # --prompts_file reads one prompt per line (the newline is the line's end).
  assert [r["prompt"] for r in records] == [PROMPTS[0], PROMPTS[1].rstrip("\n")]
  policy = _stage_policy(workdir, "ei")
  for record in records:
    text, reason = _greedy_reference(policy, record["prompt"], 16)
    assert (record["completion"], record["finish_reason"]) == (text, reason)
    assert record["sample_index"] == 0 and record["num_tokens"] >= 1
    assert np.isfinite(record["logprob"]) and record["logprob"] <= 0
  # --out writes the same JSON lines to a file.
  code, out2, err = _main(["sample", "--workdir", workdir, "--stage", "ei", "--prompt",
                           PROMPTS[0], "--out", tmp_path / "out.jsonl", *rf.gin_args(params)],
                          capsys)
  assert code == 0 and out2 == "", err
  written = json.loads((tmp_path / "out.jsonl").read_text())
  # One prompt instead of two: a shorter padded prompt length, so the log-prob's float sums
  # run over other shapes (equal to ~1e-6); everything else is identical.
  assert written.pop("logprob") == pytest.approx(records[0].pop("logprob"), abs=1e-5)
  assert written == records[0]


def test_sample_without_a_prompt_or_workdir_is_a_one_line_error(tmp_path, capsys):
  code, _, err = _main(["sample", *rf.gin_args(rf.MODEL_PARAMS)], capsys)
  assert code == 2 and "give --prompt TEXT" in _error_line(err, "sample")
  code, _, err = _main(["sample", "--stage", "ei", "--prompt", "x",
                        *rf.gin_args(rf.MODEL_PARAMS)], capsys)
  assert code == 2 and "--stage needs --workdir" in _error_line(err, "sample")


# --- eval ---------------------------------------------------------------------------------------

def test_eval_of_a_stage_reproduces_the_runs_own_evaluation(tmp_path_factory, capsys):
  workdir = rf.shared_run(tmp_path_factory)
  code, out, err = _main(["eval", "--workdir", workdir, "--stage", "ei", *rf.gin_args()], capsys)
  assert code == 0, err
  results = json.loads(out)
  # Same checkpoint, same EvalConfig and seeds: exactly what `train` measured after EI.
  assert results == rf.read_results(workdir)["stages"]["ei"]["results"]
  with open(os.path.join(workdir, "eval", "ei_final.json")) as f:
    assert json.load(f) == results
  with open(os.path.join(workdir, "eval", "ei_final.md")) as f:
    assert f.read().startswith("| run | split | maj@1 | maj@4 | pass@4 |")


def test_eval_on_a_workdir_alone_reads_the_runs_config(tmp_path_factory, capsys):
  # No --gin_file / --gin_param: the model, task and EvalConfig come from <workdir>/config.gin.
  workdir = rf.shared_run(tmp_path_factory)
  code, out, err = _main(["eval", "--workdir", workdir, "--stage", "sft"], capsys)
  assert code == 0, err
  assert json.loads(out) == rf.read_results(workdir)["stages"]["sft"]["results"]


# --- convert ------------------------------------------------------------------------------------

def test_convert_exports_a_stage_that_transformers_loads_with_the_same_logits(tmp_path_factory,
                                                                            tmp_path, capsys):
  import torch
  import transformers
  workdir = rf.shared_run(tmp_path_factory)
  out_dir = tmp_path / "hf"
  code, out, err = _main(["convert", "--workdir", workdir, "--stage", "ei", "--out", out_dir,
                          *rf.gin_args(rf.MODEL_PARAMS)], capsys)
  assert code == 0, err
  assert out.strip() == f"wrote {out_dir}"
  policy = _stage_policy(workdir, "ei")
  model = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
  rows = [list(policy.tokenizer(p)["input_ids"]) for p in PROMPTS]
  assert [list(tokenizer(p)["input_ids"]) for p in PROMPTS] == rows  # the tokenizer came along
  length = max(map(len, rows))
  tokens = np.zeros((8, length), np.int32)
  for i in range(8):  # causal model: right padding does not change the logits of real tokens
    row = rows[i % 2]
    tokens[i, :len(row)] = row
  ours = np.asarray(policy.logits(jnp.asarray(tokens)))
  with torch.no_grad():
    theirs = model(torch.from_numpy(tokens).long()).logits.numpy()
  for i in range(8):
    n = len(rows[i % 2])
    np.testing.assert_allclose(ours[i, :n], theirs[i, :n], atol=2e-4, rtol=1e-4)


# --- data ---------------------------------------------------------------------------------------

def test_data_build_prints_split_statistics(tmp_path, capsys):
  argv = ["data", "build", "arithmetic", "--option", "size=tiny", "--option", "num_train=64",
          "--option", "num_test=16", "--data_dir", tmp_path]
  code, out, err = _main(argv, capsys)
  assert code == 0, err
  stats = json.loads(out)
  assert stats["splits"]["train"]["examples"] == 64
  assert stats["splits"]["test"]["examples"] == 16
  assert 1 <= stats["splits"]["train"]["num_steps_mean"] <= 2  # tiny: 1-2 steps
  assert os.listdir(tmp_path)  # built under --data_dir
  code, _, err = _main(["data", "build", "arithmetic", "--option", "sizee=tiny",
                        "--data_dir", tmp_path], capsys)
  assert code == 2 and "unknown option(s) ['sizee']" in _error_line(err, "data")


# --- bad input ----------------------------------------------------------------------------------

def _error_line(err: str, command: str) -> str:
  """The one error line; fails on a traceback or on more than one error line."""
  assert "Traceback" not in err, err
  lines = [line for line in err.splitlines() if line.startswith(f"rlthink {command}: error:")]
  assert len(lines) == 1, err
  return lines[0]


@pytest.fixture
def run_copy(tmp_path_factory, tmp_path):
  """A copy of the shared run's workdir (checkpoints, config, results; not the data)."""
  source = rf.shared_run(tmp_path_factory)
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir, ignore=shutil.ignore_patterns("data"))
  return str(workdir)


BAD_BINDINGS = {
    "unknown task": ("Experiment.task = 'arithmatic'", "unknown task 'arithmatic'"),
    "unknown algorithm": ("Experiment.stages = ('sft', 'dpo_xyz')",
                          "unknown algorithm 'dpo_xyz'"),
    "other model shape": ("ModelSpec.overrides = {'num_layers': 3}",
                          "num_layers: checkpoint 2 vs run 3"),
    "mistyped parameter": ("SFTConfig.stpes = 30",
                           "unknown binding 'SFTConfig.stpes'"),
    "mistyped configurable": ("SFTConfg.steps = 30", "No configurable matching 'SFTConfg'"),
    # A bad value of a later stage fails before the first stage computes.
    "bad value of the EI stage": ("EIConfig.dedup = 'exact'",
                                  "EIConfig.dedup='exact' is not one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_BINDINGS))
def test_bad_input_is_one_error_line_exit_2_and_leaves_the_workdir_untouched(case, run_copy,
                                                                           capsys):
  binding, expected = BAD_BINDINGS[case]
  before = rf.snapshot(run_copy)
  code, _, err = _main(["train", "--workdir", run_copy, "--no_progress",
                        *rf.gin_args(rf.TINY_PARAMS + (binding,))], capsys)
  assert code == 2
  assert expected in _error_line(err, "train")
  assert rf.snapshot(run_copy) == before  # checkpoints, config.gin and results byte for byte


def test_unwritable_workdir_is_one_error_line_exit_2(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("keep me")
  workdir = blocker / "run"  # tests run as root: a path under a regular file cannot be created
  code, _, err = _main(["train", "--workdir", workdir, "--no_progress", *rf.gin_args()], capsys)
  assert code == 2
  line = _error_line(err, "train")
  assert str(workdir) in line and "not writable" in line
  assert blocker.read_text() == "keep me"


def test_exit_status_of_the_console_command_is_2_on_bad_input(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "rlthink.cli", "train", "--workdir",
                         str(tmp_path / "run"), "--gin_param", "EIConfig.iteratons = 2"],
                        capture_output=True, text=True, env=rf.cli_env(), timeout=300)
  assert proc.returncode == 2
  line = _error_line(proc.stderr, "train")
  assert "unknown binding 'EIConfig.iteratons'" in line and "Did you mean 'iterations'" in line


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_stages_flag_binds_only_stages_last(command):
  args = cli.build_parser().parse_args([command, "--workdir", "w", "--stages", "rl_a, rl_b",
                                        "--gin_param", "SFTConfig.steps = 3"])
  cli._stages_binding(args)
  assert args.gin_param == ["SFTConfig.steps = 3", "Experiment.only_stages = ['rl_a', 'rl_b']"]
