"""generic: bring-your-own data from JSONL / JSON / parquet / save_to_disk files (fixtures here)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlthink import cli, tasks
from rlthink.tasks import generic

RECORDS = {
    "train": [
        {"uid": "a1", "problem": "Half of 3/2?", "final": "\\frac{3}{4}",
         "rationale": "3/2 divided by 2 is 3/4."},
        {"uid": "a2", "problem": "A shop sells 1,200 eggs a day. How many in 5 days?",
         "final": 6000, "rationale": "1200*5=6000"},
        {"uid": "a3", "problem": "What is the capital of France?", "final": "Paris",
         "rationale": "France's capital is Paris."},
    ],
    "test": [
        {"uid": "b1", "problem": "What is 20% of 50?", "final": "10", "rationale": "50/5=10"},
    ],
}
FIELDS = dict(question_field="problem", answer_field="final", thinking_field="rationale",
              id_field="uid")


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _write_save_to_disk(directory, rows):
  """What `datasets.Dataset.save_to_disk` writes: Arrow IPC stream shards listed in state.json."""
  directory.mkdir(parents=True)
  table = pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in rows])
  with pa.OSFile(str(directory / "data-00000-of-00001.arrow"), "wb") as sink:
    with pa.ipc.new_stream(sink, table.schema) as writer:
      writer.write_table(table)
  (directory / "state.json").write_text(json.dumps(
      {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": None}))
  (directory / "dataset_info.json").write_text("{}")


@pytest.fixture
def files(tmp_path):
  return {split: str(_write_jsonl(tmp_path / f"{split}.jsonl", rows))
          for split, rows in RECORDS.items()}


def _by_id(examples):
  return {e["id"]: e for e in examples}


def test_examples_per_split_match_the_file(tmp_path, files):
  task = tasks.get("generic", **files, **FIELDS, data_dir=str(tmp_path / "tfds"))
  assert task.splits == ("train", "test")
  for split, rows in RECORDS.items():
    examples = _by_id(task.examples(split))
    assert sorted(examples) == [r["uid"] for r in rows]
    for row in rows:
      example = examples[row["uid"]]
      assert example["question"] == row["problem"]
      assert example["answer"] == str(row["final"])
      assert task.reference(example) == f"<think>{row['rationale']}</think>{row['final']}"
      assert task.verify(task.reference(example), example) == 1.0
  train = _by_id(task.examples("train"))
  assert task.verify("<think>..</think>\\boxed{0.75}", train["a1"]) == 1.0
  assert task.verify("<think>..</think>6,000 eggs", train["a2"]) == 1.0
  assert task.verify("<think>..</think>The capital is PARIS", train["a3"]) == 0.0  # last line
  assert task.verify("<think>..</think>paris.", train["a3"]) == 1.0
  assert task.answer_key("<think>..</think>\\dfrac{6}{8}") == task.answer_key("<think></think>0.75")
  # Without an id field, ids count records; max_examples keeps the first ones.
  plain = tasks.get("generic", train=files["train"], question_field="problem",
                    answer_field="final", max_examples=2)
  assert [e["id"] for e in plain.generate("train")] == ["train-000000", "train-000001"]
  assert [e["thinking"] for e in plain.generate("train")] == ["", ""]


def test_answer_checks(tmp_path, files):
  example = {"id": "x", "question": "q", "answer": "0.75", "thinking": ""}
  completion = "<think>..</think>\\frac{3}{4}"
  scores = {check: tasks.get("generic", train=files["test"], **FIELDS, answer_check=check)
            .verify(completion, example) for check in generic.ANSWER_CHECKS}
  assert scores == {"exact": 0.0, "numeric": 0.0, "math": 1.0}
  numeric = tasks.get("generic", train=files["test"], **FIELDS, answer_check="numeric")
  assert numeric.answer_kind == "number"
  assert numeric.verify("<think>..</think>It is $10.", example | {"answer": "10"}) == 1.0
  with pytest.raises(ValueError, match=r"train.jsonl:1: answer_check='numeric' but field 'final'"):
    tasks.get("generic", train=files["train"], **FIELDS, answer_check="numeric")


def test_json_parquet_and_save_to_disk_read_alike(tmp_path):
  rows = RECORDS["train"]
  as_strings = [{k: str(v) for k, v in r.items()} for r in rows]
  (tmp_path / "train.json").write_text(json.dumps(rows, indent=1))
  pq.write_table(pa.Table.from_pylist(as_strings), tmp_path / "train.parquet")
  _write_save_to_disk(tmp_path / "saved", rows)
  dataset_dict = tmp_path / "dict"
  _write_save_to_disk(dataset_dict / "train", rows)
  _write_save_to_disk(dataset_dict / "test", RECORDS["test"])
  (dataset_dict / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
  expected = list(tasks.get("generic", train=str(tmp_path / "train.json"), **FIELDS)
                  .generate("train"))
  assert [e["answer"] for e in expected] == ["\\frac{3}{4}", "6000", "Paris"]
  for source in (dict(train=str(tmp_path / "train.parquet")), dict(train=str(tmp_path / "saved")),
                 dict(path=str(tmp_path / "saved")), dict(path=str(dataset_dict))):
    assert list(tasks.get("generic", **source, **FIELDS).generate("train")) == expected, source
  assert tasks.get("generic", path=str(dataset_dict), **FIELDS).splits == ("train", "test")
  (tmp_path / "dir").mkdir()  # a directory of <split>.jsonl files: train first
  _write_jsonl(tmp_path / "dir" / "test.jsonl", RECORDS["test"])
  _write_jsonl(tmp_path / "dir" / "train.jsonl", rows)
  assert tasks.get("generic", path=str(tmp_path / "dir"), **FIELDS).splits == ("train", "test")


def test_bad_input_gives_one_line_errors(tmp_path, files):
  with pytest.raises(ValueError) as error:
    tasks.get("generic", **files, question_field="question", answer_field="final")
  message = str(error.value)
  assert "no field 'question'" in message and files["train"] in message
  assert "question_field" in message and "\n" not in message
  with pytest.raises(ValueError, match="either option path=DIR or a file per split"):
    tasks.get("generic")
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    tasks.get("generic", train=str(tmp_path / "missing.jsonl"))
  with pytest.raises(ValueError, match="answer_check='fuzzy'"):
    tasks.get("generic", **files, answer_check="fuzzy")
  twice = _write_jsonl(tmp_path / "twice.jsonl", RECORDS["train"] + RECORDS["train"][:1])
  with pytest.raises(ValueError, match=r"twice.jsonl:4: id 'a1' .* repeats .*twice.jsonl:1"):
    list(tasks.get("generic", train=str(twice), **FIELDS).generate("train"))


def test_an_edited_file_is_rebuilt(tmp_path, files):
  data_dir = str(tmp_path / "tfds")
  before = tasks.get("generic", **files, **FIELDS, data_dir=data_dir)
  assert len(before.examples("test")) == 1
  _write_jsonl(tmp_path / "test.jsonl", RECORDS["test"] + [
      {"uid": "b2", "problem": "1+1?", "final": "2", "rationale": "1+1=2"}])
  after = tasks.get("generic", **files, **FIELDS, data_dir=data_dir)
  assert after.config_name != before.config_name
  assert sorted(_by_id(after.examples("test"))) == ["b1", "b2"]
  assert tasks.get("generic", **files, **FIELDS).config_name == after.config_name  # stable



def test_data_build_command(tmp_path, files, capsys, cli_state):
  options = [f"train={files['train']}", f"test={files['test']}", "question_field=problem",
             "answer_field=final", "thinking_field=rationale", "answer_check=math"]
  argv = ["data", "build", "generic", "--data_dir", str(tmp_path / "tfds")]
  assert cli.main(argv + [a for o in options for a in ("--option", o)]) == 0
  stats = json.loads(capsys.readouterr().out)
  assert {k: v["examples"] for k, v in stats["splits"].items()} == {"train": 3, "test": 1}
  assert stats["options"]["answer_check"] == "math"
  assert cli.main(argv + ["--option", f"train={files['train']}", "--option", "answer_field=x"]) == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith("rlthink data: error:") and "no field 'x'" in error
  assert len(error.splitlines()) == 1
