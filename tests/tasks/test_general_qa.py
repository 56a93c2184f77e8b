"""general_qa: reasoning over the facts always answers; the recorded shortcut works at its rate."""

import re

import pytest

from rlthink import tasks

_RELATION = re.compile(r"^(\w+) is (\w+)'s (\w+)\.$")
_ATTRIBUTE = re.compile(r"^(\w+) (?:lives in|works as a|owns a|likes) (\w+)\.$")
_QUERY = re.compile(r"^(?:Where does|What does|What pet does|What food does) (.+?) "
                    r"(?:live|work as|own|like)\?$")


def _solve(example):
  """An independent reader of the prompt: (answer by reasoning, answer by the shortcut)."""
  facts_line, query_line = example["question"].split("\n")
  facts = re.findall(r"[^.]+\.", facts_line.removeprefix("Facts: "))
  relation, value = {}, {}
  for fact in (f.strip() for f in facts):
    if m := _RELATION.match(fact):
      relation[(m.group(2), m.group(3))] = m.group(1)
    elif m := _ATTRIBUTE.match(fact):
      value[m.group(1)] = m.group(2)
    else:
      raise AssertionError(f"unparsed fact {fact!r}")
  subject = _QUERY.match(query_line.removeprefix("Question: ")).group(1).split("'s ")
  person = subject[0]
  for rel in subject[1:]:
    person = relation[(person, rel)]
  return value[person], value[subject[0]]


@pytest.mark.parametrize("size", ["tiny", "default", "hard"])
def test_reasoning_always_answers_and_shortcut_is_recorded(size):
  task = tasks.get("general_qa", size=size, num_train=400)
  for example in task.generate("train"):
    by_reasoning, by_shortcut = _solve(example)
    assert by_reasoning == example["answer"]
    assert by_shortcut == example["shortcut_answer"]
    assert example["shortcut_works"] == (by_shortcut == example["answer"])
    assert task.verify(task.reference(example), example) == 1.0


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7, 1.0])
def test_shortcut_rate_is_the_option(rate):
  task = tasks.get("general_qa", size="tiny", num_train=2000, shortcut_rate=rate)
  works = [e["shortcut_works"] for e in task.generate("train")]
  assert abs(sum(works) / len(works) - rate) < 0.04


def test_reward_looks_only_at_the_final_answer():
  task = tasks.get("general_qa", size="tiny", shortcut_rate=0.0)
  example = next(task.generate("test"))
  answer, shortcut = example["answer"], example["shortcut_answer"]
  assert shortcut != answer
  assert task.verify(f"<think>no reasoning at all</think>{answer.upper()}.", example) == 1.0
  assert task.verify(f"<think>{answer}</think>{shortcut}", example) == 0.0
  assert task.verify(f"<think>x</think>{shortcut}\n{answer}", example) == 1.0  # last line counts
  assert task.verify(f"<think>x</think>{answer} or {shortcut}", example) == 0.0
  assert task.verify(f"<think>{answer}", example) == 0.0


def test_options_are_validated():
  with pytest.raises(ValueError, match="invalid option shortcut_rate=1.5"):
    tasks.get("general_qa", shortcut_rate=1.5)
  with pytest.raises(ValueError, match="invalid option num_people=3"):
    tasks.get("general_qa", num_people=3, max_hops=2)


def test_tiny_builds_deterministically(tmp_path):
  a = tasks.get("general_qa", size="tiny", data_dir=str(tmp_path / "a"))
  b = tasks.get("general_qa", size="tiny", data_dir=str(tmp_path / "b"))
  assert list(a.examples("train")) == list(b.examples("train"))
  other = tasks.get("general_qa", size="tiny", seed=1)
  assert list(other.generate("train")) != list(a.generate("train"))


def test_train_and_test_splits_have_their_own_shortcut_rates():
  task = tasks.get("general_qa", size="tiny", num_train=2000, num_test=2000, shortcut_rate=0.9,
                   test_shortcut_rate=0.4)
  rate = lambda split: sum(e["shortcut_works"] for e in task.generate(split)) / 2000
  assert abs(rate("train") - 0.9) < 0.03 and abs(rate("test") - 0.4) < 0.04
  assert rate("test_no_shortcut") == 0.0
  for example in task.generate("test_no_shortcut"):  # tempting but wrong, and still solvable
    by_reasoning, by_shortcut = _solve(example)
    assert by_reasoning == example["answer"] != by_shortcut == example["shortcut_answer"]
  same = tasks.get("general_qa", size="tiny", num_test=50, shortcut_rate=0.9)
  assert same.options.rate_of("test") == 0.9  # test_shortcut_rate None: the train rate


def test_sft_mixture_holds_its_fractions_and_shortcut_demonstrations_answer_the_shortcut():
  task = tasks.get("general_qa", size="tiny", num_train=3000, num_test=100,
                   sft_shortcut_fraction=0.3, sft_empty_fraction=0.2, sft_bypass_fraction=0.1)
  train = list(task.generate("train"))
  share = lambda style: sum(e["sft_style"] == style for e in train) / len(train)
  assert abs(share("shortcut") - 0.3) < 0.03 and abs(share("empty") - 0.2) < 0.03
  assert abs(share("bypass") - 0.1) < 0.02 and abs(share("reference") - 0.4) < 0.03
  for example in train:
    thinking, answer = task.demonstration(example)
    shown = task.verify(task.format.completion(thinking, answer), example)
    if example["sft_style"] == "reference":
      assert (thinking, answer) == (task.thinking(example), example["answer"]) and shown == 1.0
      continue
    # The shortcut behaviour: the named person's value, right exactly when the shortcut works.
    assert answer == example["shortcut_answer"] == _solve(example)[1]
    assert shown == float(example["shortcut_works"])
    style = example["sft_style"]
    assert thinking == {"empty": "", "shortcut": example["shortcut_thinking"],
                        "bypass": task.thinking(example)}[style]
    if style == "shortcut":
      assert thinking in task.prompt(example)  # a fact of the prompt, not the chain
    # The reference and the reward stay the truth whatever the demonstration.
    assert task.verify(task.reference(example), example) == 1.0
  for split in ("test", "test_no_shortcut"):
    assert {e["sft_style"] for e in task.generate(split)} == {"reference"}


def test_sft_sequences_are_the_demonstrations(tmp_path):
  from rlthink.models import tokenizer as tokenizers
  from rlthink.tasks import pipeline
  tok = tokenizers.builtin_tokenizer()
  task = tasks.get("general_qa", size="tiny", num_train=60, num_test=4, sft_shortcut_fraction=0.3,
                   sft_empty_fraction=0.2, sft_bypass_fraction=0.2, data_dir=str(tmp_path))
  examples = [task.examples("train")[i] for i in range(60)]
  assert {e["sft_style"] for e in examples} == {"reference", "shortcut", "empty", "bypass"}
  for example in examples:
    seq = pipeline.encode_sft(task, example, tok)
    completion = tok.decode(seq["tokens"][seq["loss_mask"]].tolist(), skip_special_tokens=True)
    assert completion == task.format.completion(*task.demonstration(example))
  lengths = pipeline.sft_lengths(task, examples, tok, chunk=16)
  assert lengths.tolist() == [len(pipeline.encode_sft(task, e, tok)["tokens"]) for e in examples]


def test_questions_do_not_depend_on_the_sft_mixture():
  plain = tasks.get("general_qa", size="tiny")
  mixed = tasks.get("general_qa", size="tiny", sft_shortcut_fraction=0.4, sft_empty_fraction=0.3,
                    sft_bypass_fraction=0.3)
  drop = lambda e: {k: v for k, v in e.items() if k != "sft_style"}
  for split in plain.splits:
    assert [drop(e) for e in plain.generate(split)] == [drop(e) for e in mixed.generate(split)]
  assert {e["sft_style"] for e in mixed.generate("train")} == {"shortcut", "empty", "bypass"}


@pytest.mark.parametrize("options, name", [
    ({"test_shortcut_rate": -0.1}, "test_shortcut_rate"),
    ({"sft_shortcut_fraction": 0.5, "sft_empty_fraction": 0.3, "sft_bypass_fraction": 0.3},
     "sft_bypass_fraction"),
    ({"sft_shortcut_fraction": 1.2}, "sft_shortcut_fraction")])
def test_mixture_and_rate_options_are_validated(options, name):
  with pytest.raises(ValueError, match=f"invalid option {name}="):
    tasks.get("general_qa", **options)
