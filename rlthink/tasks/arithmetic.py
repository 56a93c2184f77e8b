"""arithmetic: synthetic GSM8K-style multi-step word problems with step-by-step solutions.

A problem follows one quantity through `num_steps` operations:

    Ann has 3 pens. She gets 4 more. She loses 2. How many pens now?
    <think>3+4=7
    7-2=5</think>5

Each example carries the per-step equations ("steps", for dense and process rewards), the
intermediate values ("values"), and the operation sequence ("operations": the left-hand sides,
"3+4", "7-2"; compare with `operation_sequence(completion)` for Expert Iteration de-duplication).
Sizes: "tiny" (1-2 steps of + and - on numbers up to 9, answers up to 20: learnable by a ~1M
parameter character model on CPU), "default" (2-5 steps, all four operations), "hard" (6-10 steps).
The test split does not depend on `num_train`, and no test question appears in train.
"""

from __future__ import annotations

import dataclasses
import decimal
import fractions
import re
from typing import Iterator

import numpy as np

from rlthink.tasks import answers
from rlthink.tasks.base import PromptFormat, Task

OPERATIONS = ("+", "-", "*", "/")
_CANONICAL_OP = re.compile(r"(?<=[0-9])([-+*/])")  # an operator of a canonical expression
_NAMES = (("Ann", "She"), ("Bob", "He"), ("Eva", "She"), ("Tom", "He"), ("Mia", "She"),
          ("Sam", "He"), ("Zoe", "She"), ("Leo", "He"))
_ITEMS = ("pens", "cards", "books", "coins", "eggs", "shells", "stamps", "apples")
_SENTENCES = {
    "+": ("{p} gets {b} more.", "{p} buys {b} more.", "{p} finds {b} more."),
    "-": ("{p} loses {b}.", "{p} gives away {b}.", "{p} sells {b}."),
    "*": ("{p} ends up with {b} times as many.",),
    "/": ("{p} splits them into {b} equal piles and keeps one.",),
}
_MAX_TRIES_PER_EXAMPLE = 50


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options. Operands of + and - are 1..max_number, factors and divisors 2..max_factor;
  every intermediate value stays a whole number in 0..max_value."""

  seed: int = 0
  size: str = "default"
  num_train: int = 7473
  num_test: int = 1319
  min_steps: int = 2
  max_steps: int = 5
  max_number: int = 20
  max_value: int = 1000
  max_factor: int = 5
  operations: tuple[str, ...] = OPERATIONS

  def __post_init__(self):
    object.__setattr__(self, "operations", tuple(self.operations))
    bad = [op for op in self.operations if op not in OPERATIONS]
    checks = [
        ("num_train", self.num_train >= 0), ("num_test", self.num_test >= 0),
        ("min_steps", 1 <= self.min_steps <= self.max_steps),
        ("max_number", self.max_number >= 2),
        ("max_value", self.max_value >= self.max_number),
        ("max_factor", self.max_factor >= 2),
        ("operations", bool(self.operations) and not bad
         and any(op in self.operations for op in "+*")),
    ]
    for name, ok in checks:
      if not ok:
        raise ValueError(f"arithmetic: invalid option {name}={getattr(self, name)!r} in {self} "
                         "(need num_* >= 0, 1 <= min_steps <= max_steps, max_number >= 2, "
                         "max_value >= max_number, max_factor >= 2, operations a subset of "
                         f"{OPERATIONS} with + or *)")


def _choices(op: str, value: int, opts: Options) -> list[int]:
  """The operands b for which `value op b` stays a whole number in 0..max_value."""
  if op == "+":
    return list(range(1, min(opts.max_number, opts.max_value - value) + 1))
  if op == "-":
    return list(range(1, min(opts.max_number, value) + 1))
  top = min(opts.max_number, opts.max_factor)
  if op == "*":
    return list(range(2, min(top, opts.max_value // value) + 1)) if value else []
  return [b for b in range(2, top + 1) if value % b == 0]


def _apply(op: str, a: int, b: int) -> int:
  return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


def sample_problem(rng: np.random.Generator, opts: Options) -> dict | None:
  """One random problem (fields of an example but "id"), or None when a step had no valid move."""
  name, pronoun = _NAMES[rng.integers(len(_NAMES))]
  item = _ITEMS[rng.integers(len(_ITEMS))]
  value = int(rng.integers(1, opts.max_number + 1))
  sentences = [f"{name} has {value} {item}."]
  steps, operations, values = [], [], [value]
  for _ in range(int(rng.integers(opts.min_steps, opts.max_steps + 1))):
    moves = [(op, _choices(op, value, opts)) for op in opts.operations]
    moves = [(op, bs) for op, bs in moves if bs]
    if not moves:
      return None
    op, bs = moves[rng.integers(len(moves))]
    b = bs[rng.integers(len(bs))]
    templates = _SENTENCES[op]
    sentences.append(templates[rng.integers(len(templates))].format(p=pronoun, b=b))
    result = _apply(op, value, b)
    steps.append(f"{value}{op}{b}={result}")
    operations.append(f"{value}{op}{b}")
    values.append(result)
    value = result
  sentences.append(f"How many {item} now?")
  return {"question": " ".join(sentences), "answer": str(value), "steps": steps,
          "operations": operations, "values": values, "num_steps": len(steps)}


def operation_sequence(text: str, with_operands: bool = True,
                       prompt_format: PromptFormat | None = None) -> tuple[str, ...]:
  """The operations a completion performs, in order: ("3+4", "7-2"), or ("+", "-").

  Read from the thinking span when the completion has a closed one, else from the whole text.
  Two solutions with the same sequence count as duplicates in Expert Iteration.
  """
  fmt = prompt_format or PromptFormat()
  span = answers.split_thinking(text, fmt.think_open, fmt.think_close, require_thinking=True,
                                opened_in_prompt=fmt.open_thinking_in_prompt)
  equations = answers.find_equations(span.thinking if span.thinking is not None else text)
  if with_operands:
    return tuple(expression for expression, _ in equations)
  return tuple(op for expression, _ in equations for op in answers.operators(expression))


def exact_value(number: str) -> fractions.Fraction:
  """The exact value of a canonical number string, of any length (through Decimal: Python's
  int(str) refuses more than 4,300 digits, and a completion may hold such a number)."""
  return fractions.Fraction(decimal.Decimal(number))


def evaluate(expression: str) -> fractions.Fraction | None:
  """The exact value of a canonical expression ("7--2*3" -> 13, `answers.find_equations` form),
  with * and / before + and -; None on division by zero."""
  parts = _CANONICAL_OP.split(expression)
  terms, ops = [exact_value(parts[0])], []
  for op, number in zip(parts[1::2], parts[2::2]):
    value = exact_value(number)
    if op in "*/":
      if op == "/" and value == 0:
        return None
      terms[-1] = terms[-1] * value if op == "*" else terms[-1] / value
    else:
      terms.append(value)
      ops.append(op)
  total = terms[0]
  for op, value in zip(ops, terms[1:]):
    total = total + value if op == "+" else total - value
  return total


def equations_hold(text: str, prompt_format: PromptFormat | None = None) -> bool:
  """True when the closed thinking span of a completion holds at least one equation and every one
  is exactly true ("3+4=7"; not "3+4=8"). A final-answer verifier also accepts a right answer
  reached by wrong steps ("<think>7+1=7</think>8"); Expert Iteration can filter those out with it.
  """
  fmt = prompt_format or PromptFormat()
  span = answers.split_thinking(text, fmt.think_open, fmt.think_close, require_thinking=True,
                                opened_in_prompt=fmt.open_thinking_in_prompt)
  if span.thinking is None:
    return False
  equations = answers.find_equations(span.thinking)
  return bool(equations) and all(evaluate(e) == exact_value(r) for e, r in equations)


class Arithmetic(Task):
  """Synthetic multi-step arithmetic word problems with step annotations."""

  name = "arithmetic"
  version = "1.0.0"
  answer_kind = "number"  # majority votes compare `answers.number_key`
  splits = ("train", "test")
  features = {"id": "text", "question": "text", "answer": "text", "steps": "text_list",
              "operations": "text_list", "values": "int_list", "num_steps": "int"}
  Options = Options
  sizes = {
      "tiny": dict(num_train=2000, num_test=200, min_steps=1, max_steps=2, max_number=9,
                   max_value=20, operations=("+", "-")),
      "default": {},
      "hard": dict(min_steps=6, max_steps=10, max_number=50, max_value=100000, max_factor=10),
  }

  def _sample(self, split: str, count: int, exclude: set[str]) -> Iterator[dict]:
    rng = np.random.default_rng([self.options.seed, self.splits.index(split)])
    seen = set(exclude)
    for index in range(count):
      for _ in range(_MAX_TRIES_PER_EXAMPLE):
        problem = sample_problem(rng, self.options)
        if problem is not None and problem["question"] not in seen:
          break
      else:
        raise ValueError(
            f"arithmetic: could not draw {count} distinct {split} problems (stuck at {index}) "
            f"with {self.options}; lower num_train/num_test or widen max_number/steps/operations")
      seen.add(problem["question"])
      yield {"id": f"{split}-{index:06d}", **problem}

  def generate(self, split: str) -> Iterator[dict]:
    self.check_split(split)
    if split == "test":
      yield from self._sample("test", self.options.num_test, set())
      return
    test = {ex["question"] for ex in self._sample("test", self.options.num_test, set())}
    yield from self._sample("train", self.options.num_train, test)

  def verify_answer(self, answer: str, example: dict) -> float:
    return answers.verify_number(answer, example["answer"])

  def operations(self, completion: str, with_operands: bool = True) -> tuple[str, ...]:
    """`operation_sequence` of a completion under this task's prompt format."""
    return operation_sequence(completion, with_operands, self.format)

  def equations_hold(self, completion: str) -> bool:
    """`equations_hold` of a completion under this task's prompt format."""
    return equations_hold(completion, self.format)


def make_task(**options) -> Arithmetic:
  return Arithmetic.from_options(**options)
