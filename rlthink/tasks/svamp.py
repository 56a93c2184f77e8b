"""svamp: the SVAMP word problems of Patel et al. (2021), from the official SVAMP.json.

`path` is the official file (github.com/arkilpatel/SVAMP `SVAMP.json`): a JSON list of
{"ID", "Body", "Question", "Equation", "Answer", "Type"}, e.g. Body "Dan had $ 3 left ...",
Question "How much did the candy bar cost?", Equation "( 4.0 - 3.0 )", Answer 1.0. The file has no
train/test split: a permutation drawn from `seed` puts `num_test` problems in test, the rest in
train. The prompt is Body + " " + Question; the reference thinking is the equation evaluated one
operation per line ("4-3=1"); the answer is the Answer field, compared exactly.
"""

from __future__ import annotations

import ast
import dataclasses
import fractions
import hashlib
import json
import os
from typing import Iterator

import numpy as np

from rlthink.tasks import answers, arithmetic
from rlthink.tasks.base import Task

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_FIELDS = ("ID", "Body", "Question", "Equation", "Answer")


def format_number(value: fractions.Fraction, digits: int = 6) -> str:
  """Exact when the decimal expansion ends within `digits` places, else rounded to `digits`."""
  if value.denominator == 1:
    return str(value.numerator)
  scaled = round(abs(value) * 10 ** digits)
  whole, frac = divmod(scaled, 10 ** digits)
  return answers.canonical_number(f"{'-' if value < 0 else ''}{whole}.{frac:0{digits}d}")


def equation_steps(equation: str) -> tuple[list[str], list[str], fractions.Fraction]:
  """Evaluates a SVAMP equation "( ( 4.0 + 3.0 ) * 2.0 )" exactly, innermost operation first.

  Returns (steps ["4+3=7", "7*2=14"], operations ["4+3", "7*2"], value). Raises ValueError for
  anything but numbers, + - * / and parentheses.
  """
  try:
    tree = ast.parse(equation.strip(), mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"SVAMP equation {equation!r} does not parse: {e}") from e
  steps, operations = [], []

  def evaluate(node) -> fractions.Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
      return fractions.Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
      left, right = evaluate(node.left), evaluate(node.right)
      op = _OPS[type(node.op)]
      if op == "/" and right == 0:
        raise ValueError(f"SVAMP equation {equation!r} divides by zero")
      value = {"+": left + right, "-": left - right, "*": left * right,
               "/": left / right if right else 0}[op]
      expression = f"{format_number(left)}{op}{format_number(right)}"
      operations.append(expression)
      steps.append(f"{expression}={format_number(value)}")
      return value
    raise ValueError(f"SVAMP equation {equation!r}: unexpected {ast.dump(node)[:60]}")

  return steps, operations, evaluate(tree)


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options: the file, the seed of the train/test split and the test size."""

  path: str | None = None
  seed: int = 0
  size: str = "default"
  num_test: int = 300
  max_train: int | None = None

  def __post_init__(self):
    if self.path is None:
      raise ValueError("svamp: option path is required: the official SVAMP.json file "
                       "(github.com/arkilpatel/SVAMP); there is no TFDS builder for SVAMP")
    if not os.path.isfile(os.path.expanduser(self.path)):
      raise FileNotFoundError(f"svamp: option path={self.path!r}: no such file (expected the "
                              "official SVAMP.json)")
    if self.num_test < 0 or (self.max_train is not None and self.max_train < 0):
      raise ValueError(f"svamp: options num_test={self.num_test}, max_train={self.max_train} "
                       "must be >= 0")


def load_problems(path: str) -> list[dict]:
  """The records of SVAMP.json, checked for the official fields."""
  path = os.path.expanduser(path)
  with open(path, encoding="utf-8") as f:
    try:
      records = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not JSON ({e}); expected the official SVAMP.json list") from e
  if not isinstance(records, list):
    raise ValueError(f"{path}: expected a JSON list of problems, got {type(records).__name__}")
  for index, record in enumerate(records):
    missing = [k for k in _FIELDS if not isinstance(record, dict) or k not in record]
    if missing:
      raise ValueError(f"{path}: problem {index} lacks fields {missing} (expected {_FIELDS})")
  return records


class Svamp(Task):
  """SVAMP one-unknown arithmetic word problems."""

  name = "svamp"
  version = "1.0.0"
  answer_kind = "number"  # majority votes compare `answers.number_key`
  splits = ("train", "test")
  features = {"id": "text", "question": "text", "answer": "text", "equation": "text",
              "steps": "text_list", "operations": "text_list", "type": "text"}
  Options = Options
  sizes = {"tiny": dict(num_test=8, max_train=16), "default": {}}

  @property
  def config_name(self) -> str:
    """Adds a hash of the file, so an edited file never reuses a stale dataset."""
    with open(os.path.expanduser(self.options.path), "rb") as f:
      return f"{super().config_name}-{hashlib.sha256(f.read()).hexdigest()[:10]}"

  def generate(self, split: str) -> Iterator[dict]:
    self.check_split(split)
    records = load_problems(self.options.path)
    if self.options.num_test > len(records):
      raise ValueError(f"svamp: option num_test={self.options.num_test} exceeds the "
                       f"{len(records)} problems in {self.options.path}")
    order = np.random.default_rng(self.options.seed).permutation(len(records))
    chosen = order[:self.options.num_test] if split == "test" else order[self.options.num_test:]
    if split == "train" and self.options.max_train is not None:
      chosen = chosen[:self.options.max_train]
    for index in sorted(int(i) for i in chosen):
      record = records[index]
      steps, operations, _ = equation_steps(str(record["Equation"]))
      question = f"{str(record['Body']).strip()} {str(record['Question']).strip()}"
      yield {"id": str(record["ID"]), "question": question,
             "answer": answers.canonical_number(
                 np.format_float_positional(float(record["Answer"]), trim="-")),
             "equation": str(record["Equation"]), "steps": steps, "operations": operations,
             "type": str(record.get("Type", ""))}

  def verify_answer(self, answer: str, example: dict) -> float:
    return answers.verify_number(answer, example["answer"])

  def operations(self, completion: str, with_operands: bool = True) -> tuple[str, ...]:
    """The operation sequence of a completion (Expert Iteration de-duplication)."""
    return arithmetic.operation_sequence(completion, with_operands, self.format)


def make_task(**options) -> Svamp:
  return Svamp.from_options(**options)
