"""The Task interface, the registry, prompt formats and the shared TFDS builder."""

import dataclasses
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rlthink import tasks
from rlthink.models.tokenizer import builtin_tokenizer
from rlthink.tasks import answers, base, builder


@dataclasses.dataclass(frozen=True)
class ToyOptions:
  seed: int = 0
  size: str = "default"
  count: int = 20


class Toy(base.Task):
  """Sums of two digits, with a field of every feature kind."""

  name = "toy_sums"
  version = "1.2.3"
  splits = ("train", "test")
  features = {"id": "text", "question": "text", "answer": "text", "steps": "text_list",
              "values": "int_list", "ratio": "float", "even": "bool", "n": "int", "meta": "json"}
  Options = ToyOptions
  sizes = {"tiny": {"count": 5}, "default": {}}

  def generate(self, split):
    rng = np.random.default_rng([self.options.seed, self.splits.index(split)])
    for i in range(self.options.count):
      a, b = (int(x) for x in rng.integers(0, 10, 2))
      yield {"id": f"{split}-{i}", "question": f"{a}+{b}? ü", "answer": str(a + b),
             "steps": [f"{a}+{b}={a + b}"], "values": [a, b], "ratio": a / 7, "even": a % 2 == 0,
             "n": -i, "meta": {"a": a, "nested": [b, None]}}

  def verify_answer(self, answer, example):
    return answers.verify_number(answer, example["answer"])


def _files(path: pathlib.Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in path.rglob("*.array_record*")}


def test_registry_knows_every_family_and_names_bad_input():
  assert {"arithmetic", "gsm8k", "svamp", "general_qa", "complementary_reasoning",
          "latent_generalization"} <= set(tasks.names())
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    tasks.get("nope")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
    tasks.get("arithmetic", colour="red")
  with pytest.raises(ValueError, match="size='huge'"):
    tasks.get("arithmetic", size="huge")
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    tasks.get("arithmetic", size="tiny").examples("dev")
  assert isinstance(tasks.get("arithmetic", size="tiny"), tasks.Task)


def test_sizes_are_defaults_and_explicit_options_win():
  assert Toy.from_options(size="tiny").options.count == 5
  assert Toy.from_options(size="tiny", count=7).options.count == 7
  assert Toy.from_options().options.count == 20


def test_builder_round_trips_every_feature_kind(tmp_path):
  task = Toy.from_options(size="tiny", data_dir=str(tmp_path))
  generated = {ex["id"]: ex for ex in task.generate("train")}
  source = task.examples("train")
  assert len(source) == 5
  read = {ex["id"]: ex for ex in source}
  assert read == generated
  assert source[-1] == source[4] and source[1:3] == [source[1], source[2]]
  with pytest.raises(IndexError):
    source[5]
  # Readable by name with plain TFDS, and stored under name/config/version.
  name = f"rlthink_toy_sums/{task.config_name}:1.2.3"
  raw = tfds.data_source(name, data_dir=str(tmp_path))["test"]
  assert len(raw) == 5 and raw[0]["question"].decode().endswith("? ü")
  assert (tmp_path / "rlthink_toy_sums" / task.config_name / "1.2.3").is_dir()


def test_builds_are_byte_identical_per_seed(tmp_path):
  paths = {}
  for run, seed in (("a", 0), ("b", 0), ("c", 1)):
    task = Toy.from_options(size="tiny", seed=seed, data_dir=str(tmp_path / run))
    paths[run] = builder.build(task).data_dir
  files = {run: _files(pathlib.Path(str(p))) for run, p in paths.items()}
  assert len(files["a"]) == 2 and files["a"] == files["b"]
  assert files["a"].keys() == files["c"].keys() and files["a"] != files["c"]


def test_config_names_separate_option_sets():
  names = {Toy.from_options(**o).config_name
           for o in ({}, {"seed": 1}, {"size": "tiny"}, {"size": "tiny", "count": 6})}
  assert len(names) == 4
  assert Toy.from_options(size="tiny", seed=3).config_name.startswith("tiny-seed3-")
  assert Toy.from_options().config_name == Toy.from_options(count=20).config_name


def test_undeclared_fields_are_an_error(tmp_path):
  class Bad(Toy):
    name = "toy_bad"

    def generate(self, split):
      for ex in super().generate(split):
        yield dict(ex, extra=1)

  with pytest.raises(ValueError, match=r"undeclared \['extra'\]"):
    Bad.from_options(size="tiny", data_dir=str(tmp_path)).examples("train")


def test_prompt_format_and_reference():
  task = Toy.from_options(size="tiny")
  ex = next(task.generate("train"))
  assert task.prompt(ex) == ex["question"] + "\n"
  assert task.reference(ex) == f"<think>{ex['steps'][0]}</think>{ex['answer']}"
  assert task.verify(task.reference(ex), ex) == 1.0
  assert task.steps(ex) == ex["steps"]

  fmt = base.PromptFormat(think_open="[T]", think_close="[/T]", open_thinking_in_prompt=True,
                          system_prompt="Solve.")
  custom = Toy.from_options(size="tiny", prompt_format=fmt)
  assert custom.prompt(ex) == f"Solve.\n{ex['question']}\n[T]"
  assert custom.reference(ex) == f"{ex['steps'][0]}[/T]{ex['answer']}"
  assert custom.verify(custom.reference(ex), ex) == 1.0
  assert custom.verify(f"<think>x</think>{ex['answer']}", ex) == 0.0  # wrong markers
  with pytest.raises(ValueError, match="chat_template"):
    base.PromptFormat(chat_template="sometimes")
  with pytest.raises(ValueError, match="non-empty and different"):
    base.PromptFormat(think_open="x", think_close="x")


def test_chat_template_is_used_only_when_asked_and_present():
  tok = builtin_tokenizer()
  question = "1+2?"
  assert base.PromptFormat(chat_template="auto").prompt(question, tok) == "1+2?\n"
  with pytest.raises(ValueError, match="no chat template"):
    base.PromptFormat(chat_template="always").prompt(question, tok)
  tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
                       "{% if add_generation_prompt %}[assistant]{% endif %}")
  fmt = base.PromptFormat(chat_template="auto", system_prompt="Be brief.")
  assert fmt.prompt(question, tok) == "[system]Be brief.\n[user]1+2?\n[assistant]"
  assert base.PromptFormat().prompt(question, tok) == "1+2?\n"  # "never" is the default


def test_data_build_reports_statistics(tmp_path):
  from rlthink.tasks import data_cli
  options = data_cli.parse_options(["size='tiny'", "seed=2", "shortcut_rate=0.5"])
  assert options == {"size": "tiny", "seed": 2, "shortcut_rate": 0.5}
  assert data_cli.parse_options(["size=tiny"]) == {"size": "tiny"}
  with pytest.raises(ValueError, match="expected key=value"):
    data_cli.parse_options(["tiny"])
  stats = data_cli.build("general_qa", options, str(tmp_path))
  assert stats["name"] == "rlthink_general_qa" and stats["version"] == "1.1.0"
  assert stats["path"].startswith(str(tmp_path)) and stats["options"]["seed"] == 2
  train = stats["splits"]["train"]
  assert train["examples"] == 256 and stats["splits"]["test"]["examples"] == 64
  examples = tasks.get("general_qa", **options, data_dir=str(tmp_path)).examples("train")
  assert train["shortcut_works_mean"] == sum(e["shortcut_works"] for e in examples) / 256
  assert '"examples": 256' in data_cli.format_statistics(stats)


@pytest.mark.parametrize("name, options, message", [
    ("arithmetic", {"seed": "../../outside"}, r"option seed='../../outside' must be int"),
    ("arithmetic", {"seed": True}, r"option seed=True must be int"),
    ("arithmetic", {"num_train": 1.5}, r"option num_train=1.5 must be int"),
    ("general_qa", {"shortcut_rate": "0.5"}, r"option shortcut_rate='0.5' must be float"),
    ("gsm8k", {"max_train": "10"}, r"option max_train='10' must be int \| None"),
])
def test_option_types_are_checked_before_any_directory_is_named(tmp_path, name, options, message):
  with pytest.raises(ValueError, match=message):
    tasks.get(name, data_dir=str(tmp_path / "data"), **options)
  assert list(tmp_path.iterdir()) == []
  assert tasks.get("arithmetic", size="tiny", seed=3).options.seed == 3
  assert tasks.get("general_qa", size="tiny", shortcut_rate=1).options.shortcut_rate == 1
