"""arithmetic: problem generation, step annotations, operation sequences and options."""

import fractions
import re
import time

import pytest

from rlthink import tasks
from rlthink.tasks import arithmetic

_STEP = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)$")


def _check_solution(example):
  """An independent check: the question's numbers drive the steps and every step computes."""
  numbers = [int(n) for n in re.findall(r"\d+", example["question"])]
  value = numbers[0]
  assert example["values"][0] == value
  for step, operand, op_text, expected in zip(example["steps"], numbers[1:],
                                              example["operations"], example["values"][1:]):
    a, op, b, result = _STEP.match(step).groups()
    assert int(a) == value and int(b) == operand and op_text == f"{a}{op}{b}"
    exact = {"+": fractions.Fraction(value + operand), "-": fractions.Fraction(value - operand),
             "*": fractions.Fraction(value * operand), "/": fractions.Fraction(value, operand)}[op]
    assert exact == int(result) == expected and exact >= 0
    value = int(result)
  assert str(value) == example["answer"] and len(example["steps"]) == example["num_steps"]


@pytest.mark.parametrize("size,steps,ops", [("tiny", (1, 2), {"+", "-"}),
                                            ("default", (2, 5), {"+", "-", "*", "/"}),
                                            ("hard", (6, 10), {"+", "-", "*", "/"})])
def test_problems_are_correct_and_follow_the_size(size, steps, ops):
  task = tasks.get("arithmetic", size=size, num_train=300, num_test=50)
  seen_ops = set()
  for example in task.generate("train"):
    _check_solution(example)
    assert steps[0] <= example["num_steps"] <= steps[1]
    assert task.verify(task.reference(example), example) == 1.0
    assert task.operations(task.reference(example)) == tuple(example["operations"])
    assert task.equations_hold(task.reference(example))
    seen_ops |= {op for op in arithmetic.operation_sequence(task.reference(example), False)}
  assert seen_ops == ops


def test_tiny_is_short_and_small():
  task = tasks.get("arithmetic", size="tiny")
  examples = list(task.generate("train"))
  assert len(examples) == 2000
  assert max(len(task.prompt(e)) for e in examples) <= 80
  assert max(len(task.reference(e)) for e in examples) <= 40
  assert max(int(e["answer"]) for e in examples) <= 20


def test_splits_are_disjoint_and_test_ignores_num_train():
  small = tasks.get("arithmetic", size="tiny", num_train=100)
  large = tasks.get("arithmetic", size="tiny", num_train=1000)
  test = list(small.generate("test"))
  assert test == list(large.generate("test"))
  train_questions = {e["question"] for e in large.generate("train")}
  assert not train_questions & {e["question"] for e in test}
  assert len(train_questions) == 1000  # no duplicates within a split either


def test_seed_changes_the_problems():
  a = list(tasks.get("arithmetic", size="tiny", seed=0).generate("test"))
  b = list(tasks.get("arithmetic", size="tiny", seed=1).generate("test"))
  assert a != b and a == list(tasks.get("arithmetic", size="tiny", seed=0).generate("test"))


def test_operation_sequence_of_model_completions():
  completion = "<think>3 + 4 = 7\nthen 7×2 = 14, 14 - 5 = 9</think>9"
  assert arithmetic.operation_sequence(completion) == ("3+4", "7*2", "14-5")
  assert arithmetic.operation_sequence(completion, with_operands=False) == ("+", "*", "-")
  # Equations in the answer span are ignored when there is a thinking span.
  assert arithmetic.operation_sequence("<think>1+1=2</think>2+2=4") == ("1+1",)
  assert arithmetic.operation_sequence("no thinking: 2*3=6") == ("2*3",)
  assert arithmetic.operation_sequence("<think>2*3=6 unterminated") == ("2*3",)
  assert arithmetic.operation_sequence("") == ()


@pytest.mark.parametrize("options,name", [
    (dict(min_steps=3, max_steps=2), "min_steps"),
    (dict(operations=("^",)), "operations"),
    (dict(operations=("-",)), "operations"),
    (dict(num_train=-1), "num_train"),
    (dict(max_number=1), "max_number"),
])
def test_bad_options_name_the_option(options, name):
  with pytest.raises(ValueError, match=f"invalid option {name}="):
    tasks.get("arithmetic", size="tiny", **options)


def test_impossible_sizes_are_a_clear_error():
  task = tasks.get("arithmetic", size="tiny", max_number=2, max_value=3, min_steps=1, max_steps=1,
                   num_train=10, num_test=5000)
  with pytest.raises(ValueError, match="could not draw 5000 distinct test problems"):
    list(task.generate("test"))


def test_tiny_builds_in_seconds(tmp_path):
  task = tasks.get("arithmetic", size="tiny", data_dir=str(tmp_path))
  start = time.perf_counter()
  source = task.examples("train")
  assert time.perf_counter() - start < 10
  assert len(source) == 2000 and len(task.examples("test")) == 200
  assert {e["id"] for e in source} == {e["id"] for e in task.generate("train")}


def test_equations_hold_rejects_right_answers_from_wrong_steps():
  holds = arithmetic.equations_hold
  assert holds("<think>3+4=7\n7-2=5</think>5")
  assert holds("<think>2+3*4=14, 7--2=9, 48/2=24</think>24")  # * and / before + and -
  assert not holds("<think>7+1=7</think>8")  # the answer verifies, a step is false
  assert not holds("<think>3+4=7\n7-2=4</think>5")
  assert not holds("<think>5/0=0</think>0")
  assert not holds("<think>no equations</think>5")
  assert not holds("<think>3+4=7")  # unclosed thinking
  assert not holds("<think>3+4=7</think>1</think>7")  # malformed: two closes
  assert arithmetic.evaluate("7--2*3") == 13 and arithmetic.evaluate("1/0") is None



def test_equations_hold_on_numbers_of_any_length():
  # Python's int(str) refuses over 4,300 digits; a sampled completion may hold such a number
  # (and Expert Iteration's resume redraws the same sample), so the check must not raise.
  a, b = "9" * 5000, "1" + "0" * 5000
  assert arithmetic.equations_hold(f"<think>{a}+1={b}</think>{b}")
  assert not arithmetic.equations_hold(f"<think>{a}+2={b}</think>{b}")
  assert arithmetic.equations_hold(f"<think>{a}.5*2=1{'9' * 5000}</think>x")  # 2 * 10**5000 - 1
  task = tasks.get("arithmetic", size="tiny")
  assert task.verify(f"<think>{a}+1={b}</think>{b}", {"answer": "3"}) == 0.0
  assert task.operations(f"<think>{a}+1={b}</think>") == (f"{a}+1",)
