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
