"""The pretrained-model recipe (configs/experiments/gsm8k_grpo_qwen2.5.gin) runs end to end on CPU:
its Hub id swapped for a tiny Qwen2 directory with a chat template, its GSM8K path for a handful
of examples in the official format, one GRPO iteration."""

import json

import gin
import pytest

import pretrained_fixtures as pf
from rlthink import cli, gin_utils
from rlthink.experiment import Experiment

RECIPE = "experiments/gsm8k_grpo_qwen2.5.gin"
PROBLEMS = [("Tom has 3 apples. He buys 4 more. How many apples does he have?",
             "3+4=<<3+4=7>>7\n#### 7"),
            ("A book costs 12 dollars. How much do 2 books cost?", "12*2=<<12*2=24>>24\n#### 24"),
            ("Ann had 10 pens and gave away 4. How many are left?", "10-4=<<10-4=6>>6\n#### 6")]


@pytest.fixture(autouse=True)
def _restore_global_state(cli_state):
  """Every test here runs `rlthink.cli.main` (see conftest's cli_state)."""



@pytest.mark.slow
def test_the_gsm8k_grpo_qwen_recipe_runs_on_a_tiny_chat_model(tmp_path, capsys):
  gin_utils.parse([RECIPE], [])
  recipe = Experiment()
  assert recipe.stages == ("grpo",)
  assert gin_utils.ModelSpec().hf_path == "Qwen/Qwen2.5-1.5B-Instruct"
  options = dict(recipe.task_options)
  gin.clear_config()
  data = tmp_path / "gsm8k"
  data.mkdir()
  for split in ("train", "test"):
    with open(data / f"{split}.jsonl", "w") as f:
      for question, answer in PROBLEMS:
        f.write(json.dumps({"question": question, "answer": answer}) + "\n")
  model = tmp_path / "qwen2-chat"
  pf.save_chat_model(model, texts=[q + a for q, a in PROBLEMS] + list(pf.TEXTS))
  options["path"] = str(data)
  params = [f"ModelSpec.hf_path = '{model}'", "ModelSpec.dtype = 'float32'",
            "ModelSpec.overrides = {'max_seq_len': 256}",
            f"Experiment.task_options = {options!r}", "Experiment.evaluate_initial = False",
            "GRPOConfig.iterations = 1", "GRPOConfig.prompts_per_iteration = 2",
            "GRPOConfig.samples_per_prompt = 2", "GRPOConfig.max_new_tokens = 8",
            "GRPOConfig.minibatch_size = None", "GRPOConfig.log_every = 1",
            "EvalConfig.k = 1", "EvalConfig.metrics = ('maj@1',)", "EvalConfig.max_new_tokens = 8",
            "EvalConfig.max_examples = 2",
            "EvalConfig.batch_size = 8"]
  workdir = tmp_path / "run"
  argv = ["train", "--gin_file", RECIPE, "--workdir", workdir, "--no_progress"]
  for p in params:
    argv += ["--gin_param", p]
  code = cli.main([str(a) for a in argv])
  assert code == 0, capsys.readouterr().err
  with open(workdir / "results.json") as f:
    results = json.load(f)
  assert set(results["stages"]["grpo"]["results"]) == {"test"}
  assert "maj@1" in results["stages"]["grpo"]["results"]["test"]
