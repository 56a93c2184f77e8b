"""gsm8k and svamp: loading the official file formats (fixtures written here), answers, errors."""

import json

import pytest
import tensorflow_datasets as tfds

from rlthink import tasks
from rlthink.tasks import gsm8k, svamp

GSM8K_RECORDS = {
    "train": [
        {"question": "Lia buys 3 boxes of 12 pencils and gives away 5. How many are left?",
         "answer": "She buys 3*12 = <<3*12=36>>36 pencils.\nShe keeps 36-5 = <<36-5=31>>31.\n"
                   "#### 31"},
        {"question": "A farm sells 1,200 eggs a day. How many in 5 days?",
         "answer": "1,200*5 = <<1200*5=6000>>6000 eggs.\n#### 6,000"},
        {"question": "Omar had $20 and spent half. How much is left?",
         "answer": "He spent 20/2 = <<20/2=10>>10 dollars.\nHe has 20-10 = <<20-10=10>>10.\n"
                   "#### 10"},
    ],
    "test": [
        {"question": "Ten birds sit on a wire; 4 fly away. How many remain?",
         "answer": "10-4 = <<10-4=6>>6 birds remain.\n#### 6"},
    ],
}
SVAMP_RECORDS = [
    {"ID": f"chal-{i}", "Body": body, "Question": question, "Equation": equation,
     "Answer": answer, "Type": kind}
    for i, (body, question, equation, answer, kind) in enumerate([
        ("Dan had $ 3 left after buying a pen. He had $ 4 at the start",
         "How much did the pen cost?", "( 4.0 - 3.0 )", 1.0, "Subtraction"),
        ("Each box holds 6 cups. There are 7 boxes", "How many cups are there?",
         "( 6.0 * 7.0 )", 42.0, "Multiplication"),
        ("A rope of 10 m is cut into 4 equal parts", "How long is each part?",
         "( 10.0 / 4.0 )", 2.5, "Common-Division"),
        ("Sam has 3 red and 5 blue marbles. He buys 2 more packs of the same",
         "How many marbles does he have?", "( ( 3.0 + 5.0 ) * 3.0 )", 24.0, "Multiplication"),
        ("Ann read 20 pages on Monday and 13 on Tuesday", "How many more on Monday?",
         "( 20.0 - 13.0 )", 7.0, "Subtraction"),
    ], 1)
]


def _write_gsm8k(directory, socratic=False):
  directory.mkdir(parents=True, exist_ok=True)
  for split, records in GSM8K_RECORDS.items():
    for suffix in ("", "_socratic"):
      with open(directory / f"{split}{suffix}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
  return directory


@pytest.fixture
def svamp_file(tmp_path):
  path = tmp_path / "SVAMP.json"
  path.write_text(json.dumps(SVAMP_RECORDS, indent=1))
  return path


def test_gsm8k_standard_answer_extraction():
  assert gsm8k.split_solution("a\nb\n#### 1,234") == ("a\nb", "1234")
  assert gsm8k.extract_answer("so... #### 72") == "72"
  assert gsm8k.extract_answer("#### 5\n#### 007 apples") == "7"
  assert gsm8k.extract_answer("no marker 72") is None
  with pytest.raises(ValueError, match="####"):
    gsm8k.split_solution("no final line")


def test_gsm8k_from_local_files(tmp_path):
  data = _write_gsm8k(tmp_path / "gsm")
  task = tasks.get("gsm8k", path=str(data), data_dir=str(tmp_path / "tfds"))
  train = sorted(task.examples("train"), key=lambda e: e["id"])
  assert [e["question"] for e in train] == [r["question"] for r in GSM8K_RECORDS["train"]]
  first, second = train[0], train[1]
  assert first["answer"] == "31" and second["answer"] == "6000"
  assert first["thinking"] == "She buys 3*12 = 36 pencils.\nShe keeps 36-5 = 31."
  assert first["steps"] == ["She buys 3*12 = 36 pencils.", "She keeps 36-5 = 31."]
  assert first["operations"] == ["3*12", "36-5"] and second["operations"] == ["1200*5"]
  assert task.reference(first) == f"<think>{first['thinking']}</think>31"
  assert task.verify(task.reference(first), first) == 1.0
  assert task.verify("<think>x</think>6,000 eggs", second) == 1.0
  assert task.verify("<think>#### 6000</think>", second) == 0.0
  assert task.operations(task.reference(first)) == ("3*12", "36-5")  # annotations removed
  assert task.operations("<think>3 * 12 = 36, 36 - 5 = 31</think>31", False) == ("*", "-")
  assert len(task.examples("test")) == 1
  keep = tasks.get("gsm8k", path=str(data), keep_calculator_annotations=True, size="tiny")
  assert "<<3*12=36>>" in next(keep.generate("train"))["thinking"]
  assert len(list(tasks.get("gsm8k", path=str(data), max_train=2).generate("train"))) == 2


def test_gsm8k_config_tracks_file_contents(tmp_path):
  data = _write_gsm8k(tmp_path / "gsm")
  before = tasks.get("gsm8k", path=str(data)).config_name
  with open(data / "test.jsonl", "a") as f:
    f.write(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
  assert tasks.get("gsm8k", path=str(data)).config_name != before


def test_gsm8k_through_the_tfds_builder(tmp_path, monkeypatch):
  data = _write_gsm8k(tmp_path / "downloads")
  # No network here: TFDS's own gsm8k builder runs on the fixture files instead of its URLs.
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      lambda self, urls: {k: str(data / f"{k}.jsonl") for k in urls})
  monkeypatch.setattr(gsm8k, "_reachable", lambda host: True)  # the download is faked above
  task = tasks.get("gsm8k", source="tfds", data_dir=str(tmp_path / "tfds"))
  examples = list(task.examples("train"))
  assert sorted(e["answer"] for e in examples) == ["10", "31", "6000"]
  assert (tmp_path / "tfds" / "gsm8k").is_dir()
  # "auto" without a path reads the prepared TFDS gsm8k even offline.
  monkeypatch.setattr(gsm8k, "_reachable", lambda host: False)
  auto = tasks.get("gsm8k", data_dir=str(tmp_path / "tfds"))
  assert sorted(e["answer"] for e in auto.examples("train")) == ["10", "31", "6000"]


def test_gsm8k_auto_offline_without_files_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(gsm8k, "_reachable", lambda host: False)
  with pytest.raises(FileNotFoundError, match="is unreachable; pass option path=DIR"):
    tasks.get("gsm8k", data_dir=str(tmp_path)).examples("train")


def test_offline_data_build_of_gsm8k_fails_fast_without_a_download(tmp_path, monkeypatch):
  # `rlthink data build gsm8k` builds without going through `examples`; offline, TFDS's download
  # would retry for minutes.
  from rlthink.tasks import data_cli
  downloads = []
  monkeypatch.setattr(gsm8k, "_reachable", lambda host: False)
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      lambda self, urls: downloads.append(urls) or {})
  for options in ({}, {"source": "tfds"}):
    with pytest.raises(FileNotFoundError, match="is unreachable; pass option path=DIR"):
      data_cli.build("gsm8k", options, str(tmp_path))
  assert downloads == []


def test_gsm8k_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="train.jsonl"):
    tasks.get("gsm8k", path=str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="needs option path"):
    tasks.get("gsm8k", source="local")
  bad = tmp_path / "bad"
  _write_gsm8k(bad)
  (bad / "train.jsonl").write_text('{"question": "q"}\n')
  with pytest.raises(ValueError, match=r"train.jsonl:1: expected a JSON object"):
    list(tasks.get("gsm8k", path=str(bad)).generate("train"))


def test_svamp_equation_steps():
  assert svamp.equation_steps("( ( 3.0 + 5.0 ) * 3.0 )")[:2] == (["3+5=8", "8*3=24"],
                                                                 ["3+5", "8*3"])
  assert svamp.equation_steps("( 20.0 / 3.0 )")[0] == ["20/3=6.666667"]
  with pytest.raises(ValueError, match="unexpected"):
    svamp.equation_steps("__import__('os')")


def test_svamp_from_the_official_file(svamp_file, tmp_path):
  task = tasks.get("svamp", path=str(svamp_file), num_test=2, data_dir=str(tmp_path))
  train, test = list(task.examples("train")), list(task.examples("test"))
  assert len(train) == 3 and len(test) == 2
  assert {e["id"] for e in train + test} == {r["ID"] for r in SVAMP_RECORDS}
  by_id = {e["id"]: e for e in train + test}
  rope = by_id["chal-3"]
  assert rope["question"] == "A rope of 10 m is cut into 4 equal parts How long is each part?"
  assert rope["answer"] == "2.5" and rope["steps"] == ["10/4=2.5"]
  assert task.operations(task.reference(rope)) == ("10/4",) == tuple(rope["operations"])
  assert task.verify(task.reference(rope), rope) == 1.0
  assert task.verify("<think>10/4</think>2.50 m", rope) == 1.0
  assert task.verify("<think>10/4</think>2", rope) == 0.0
  assert by_id["chal-2"]["answer"] == "42"
  # The split is a seeded permutation: the same seed keeps it, another changes it.
  again = tasks.get("svamp", path=str(svamp_file), num_test=2)
  assert [e["id"] for e in again.generate("test")] == [e["id"] for e in task.generate("test")]
  others = {tuple(e["id"] for e in tasks.get("svamp", path=str(svamp_file), num_test=2,
                                             seed=s).generate("test")) for s in range(6)}
  assert len(others) > 1


def test_svamp_errors_name_the_option_or_path(svamp_file, tmp_path):
  with pytest.raises(ValueError, match="option path is required"):
    tasks.get("svamp")
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    tasks.get("svamp", path=str(tmp_path / "nowhere.json"))
  with pytest.raises(ValueError, match="num_test=9 exceeds the 5 problems"):
    list(tasks.get("svamp", path=str(svamp_file), num_test=9).generate("test"))
  broken = tmp_path / "broken.json"
  broken.write_text(json.dumps([{"ID": "x", "Body": "b"}]))
  with pytest.raises(ValueError, match=r"problem 0 lacks fields \['Question', 'Equation'"):
    list(tasks.get("svamp", path=str(broken)).generate("train"))
