"""`rlthink sample` / `convert` on a Hugging Face model directory: the directory's own tokenizer
(with its chat template), the sampling flags, and a tokenizer that does not fit the model."""

import json

import pytest
import transformers

import pretrained_fixtures as pf
import rlthink
from rlthink import cli, gin_utils
from rlthink.experiment import Experiment, attach_tokenizer


@pytest.fixture(autouse=True)
def _restore_global_state(cli_state):
  """Every test here runs `rlthink.cli.main` (see conftest's cli_state)."""



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("pretrained") / "qwen2-chat"
  pf.save_chat_model(path)
  return path


def _main(argv, capsys):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_a_model_directory_brings_its_own_tokenizer_by_default(model_dir):
  gin_utils.parse([], [f"ModelSpec.hf_path = '{model_dir}'"])
  assert Experiment().tokenizer == "auto"
  policy = cli._policy_with_tokenizer()
  own = transformers.AutoTokenizer.from_pretrained(model_dir)
  assert len(policy.tokenizer) == len(own) and policy.tokenizer.chat_template == pf.CHAT_TEMPLATE
  assert policy.config.eos_token_id == tuple(own.convert_tokens_to_ids(["<|im_end|>",
                                                                       "<|endoftext|>"]))
  # A preset keeps the built-in character tokenizer (the quickstart is unchanged).
  import gin
  gin.clear_config()
  gin_utils.parse(["models/tiny.gin"], [])
  assert len(cli._policy_with_tokenizer().tokenizer) == 104


def test_sample_takes_the_model_and_sampling_flags_and_the_chat_template(model_dir, capsys):
  prompt = "Tom has 3 apples."
  code, out, err = _main(["sample", "--model", model_dir, "--prompt", prompt, "--chat_template",
                          "--temperature", "0", "--max_new_tokens", "3", "-n", "2"], capsys)
  assert code == 0, err
  records = [json.loads(line) for line in out.splitlines()]
  assert [r["sample_index"] for r in records] == [0, 1] and records[0]["prompt"] == prompt
  assert records[0]["completion"] == records[1]["completion"]  # greedy
  assert all(r["num_tokens"] <= 3 for r in records)
  code, _, err = _main(["sample", "--model", model_dir, "--prompt", "x", "--top_p", "1.5"],
                       capsys)
  assert code == 2 and "top_p" in err


def test_convert_keeps_the_tokenizer_chat_template_and_generation_config(model_dir, tmp_path,
                                                                        capsys):
  out_dir = tmp_path / "out"
  code, _, err = _main(["convert", "--model", model_dir, "--out", out_dir], capsys)
  assert code == 0, err
  source = transformers.AutoTokenizer.from_pretrained(model_dir)
  exported = transformers.AutoTokenizer.from_pretrained(out_dir)
  text = "A book costs 12 dollars. <|im_end|>"
  assert exported.encode(text) == source.encode(text) and len(exported) == len(source)
  assert exported.chat_template == pf.CHAT_TEMPLATE
  with open(model_dir / "generation_config.json") as f, \
       open(out_dir / "generation_config.json") as g:
    assert json.load(g)["eos_token_id"] == json.load(f)["eos_token_id"]


def test_a_tokenizer_that_does_not_fit_the_model_is_an_error(model_dir):
  policy = rlthink.load_pretrained(model_dir)
  small = policy.replace(config=policy.config.replace(vocab_size=64))
  with pytest.raises(ValueError, match="vocab_size is 64"):
    attach_tokenizer(small, None)
  # Fits in size, but an eos id lies past the model's vocabulary.
  broken = policy.replace(config=policy.config.replace(eos_token_id=(5, 999)))
  with pytest.raises(ValueError, match="outside the model's vocabulary"):
    attach_tokenizer(broken, None)
