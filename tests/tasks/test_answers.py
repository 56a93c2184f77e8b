"""Answer extraction and the verifiers on adversarial completions (rules: tasks/answers.py)."""

import decimal
import random
import time

import pytest

from rlthink import tasks
from rlthink.tasks import answers

EXAMPLE = {"id": "x", "question": "Ann has 3 pens. She gets 4 more. How many pens now?",
           "answer": "7", "steps": ["3+4=7"], "operations": ["3+4"], "values": [3, 7],
           "num_steps": 1}


@pytest.fixture(scope="module")
def arithmetic():
  return tasks.get("arithmetic", size="tiny")


@pytest.fixture(scope="module")
def general_qa():
  return tasks.get("general_qa", size="tiny")


def test_split_thinking_rules():
  split = answers.split_thinking
  assert split("<think>a</think>b") == answers.Split("a", "b")
  assert split("  <think>a</think>b") == answers.Split("a", "b")  # text before the open is ignored
  assert split("<think>a</think>b<think>c</think>d") == answers.Split(None, None)  # two closes
  assert split("<think>a</think>b</think>c") == answers.Split(None, None)
  assert split("a</think>b</think>c", opened_in_prompt=True) == answers.Split(None, None)
  assert split("a</think>b</think>c", require_thinking=False).answer is None
  assert split("<think>a") == answers.Split(None, None)  # unterminated
  assert split("<think>a</think>b<think>c") == answers.Split(None, None)  # re-opened
  assert split("just 7") == answers.Split(None, None)  # thinking required by default
  assert split("just 7", require_thinking=False) == answers.Split(None, "just 7")
  assert split("<think>x 7", require_thinking=False).answer is None
  assert split("a</think>b", opened_in_prompt=True) == answers.Split("a", "b")
  assert split("", opened_in_prompt=True).answer is None


def test_numbers_parse_exactly():
  num = answers.last_number
  assert num("$1,000.50 total") == decimal.Decimal("1000.50")
  assert num("12 apples") == 12 and num("007") == 7 and num("50%") == 50
  assert num("x = -5") == -5 and num("3-5") == 5  # a minus glued to a digit is an operator
  assert num("４２") == 42 and num("٤٢") == 42 and num("\u22125") == -5  # Nd digits, U+2212
  assert num("²") is None and num("①") is None and num("O") is None  # look-alikes are not digits
  assert num("7.5²") is None and num("1,2,3") is None and num("(3, 4)") == 4
  assert num("no number here") is None and num("") is None
  assert answers.parse_number("1 or 2") is None and answers.parse_number("5.0") == 5
  assert answers.canonical_number("-0007.500") == "-7.5"
  assert answers.canonical_number("-0.0") == "0" and answers.canonical_number("1,234") == "1234"


def test_huge_numbers_compare_exactly():
  big = "9" * 60
  assert answers.verify_number(f"it is {big}", big) == 1.0
  # float(big) == float(big[:-1] + "8") would be a false positive; Decimal is exact.
  assert answers.verify_number(f"it is {big[:-1]}8", big) == 0.0
  assert answers.verify_number("1e400", "1") == 0.0


def test_equations_and_operators():
  text = "First 3 + 4 = 7, then 7×2=14 and <<48/2=24>> also 7 - -2 = 9; 5 + 6 alone."
  assert answers.find_equations(text) == [("3+4", "7"), ("7*2", "14"), ("48/2", "24"),
                                          ("7--2", "9")]
  assert answers.operators("7--2*3") == ("-", "*")


def test_normalize_text():
  assert answers.normalize_text("  The ＯＳＬＯ! ") == "oslo"
  assert answers.verify_text("I think\nOslo.", "oslo") == 1.0
  assert answers.verify_text("Oslo or Rome", "Oslo") == 0.0
  assert answers.verify_text("So, the answer is: Oslo", "Oslo", marker="the answer is:") == 1.0
  assert answers.verify_text("Oslo", "Oslo", marker="the answer is:") == 0.0


@pytest.mark.parametrize("completion,score", [
    ("<think>3+4=7</think>7", 1.0),
    ("<think>3+4=7</think>The answer is 7 pens.", 1.0),
    ("<think>3+4=7</think> 0007 ", 1.0),
    ("<think>3+4=7</think>７", 1.0),  # fullwidth digit (Unicode Nd)
    ("<think>3+4=7</think>٧", 1.0),  # Arabic-Indic digit
    ("<think>x</think>$7.00", 1.0),
    ("<think>x</think>8 or 7", 1.0),  # the last answer counts
    ("<think>x</think>7 or 8", 0.0),
    ("<think>the answer is 7</think>", 0.0),  # only inside thinking
    ("<think>the answer is 7</think>I don't know", 0.0),
    ("<think>3+4=7 so 7", 0.0),  # unterminated
    ("7", 0.0),  # no thinking span
    ("", 0.0),
    ("<think></think>", 0.0),
    ("</think>7", 1.0),  # a close without an open: everything before it was thinking
    ("<think>a</think>7<think>b", 0.0),  # thinking re-opened
    ("<think>3+4=7</think>1</think>7", 0.0),  # a second close is malformed, not the answer 7
    ("<think>3+4=7</think>7</think>", 0.0),
    ("<think>3+4=7</think></think>7", 0.0),
    (EXAMPLE["question"], 0.0),  # the prompt echoed back
    (EXAMPLE["question"] + "\n<think>3+4=7</think>7", 1.0),
    ("<think>x</think>7²", 0.0),  # 7 squared is not 7
    ("<think>x</think>7½", 0.0),
    ("<think>x</think>7,8", 0.0),  # a comma-glued list holds no number
    ("<think>x</think>7.", 1.0),
])
def test_arithmetic_verifier_adversarial(arithmetic, completion, score):
  assert arithmetic.verify(completion, EXAMPLE) == score


def test_verifier_long_outputs_are_fast(arithmetic):
  cases = ["<think>" + "1+1=2 " * 20000 + "</think>7",
           "<think>" + "9" * 100000 + "</think>" + "8" * 100000,
           "<think>" + "1" * 100000,
           "<think></think>" + "1+" * 50000 + "7",
           "<think></think>" + "1," * 50000 + "7",
           "<think></think>" + "-" * 100000 + "7",
           "<think>" * 20000 + "</think>7",
           "<think></think>" + "1 " + " " * 100000 + "=",
           "<think></think>" + "١" * 100000]
  start = time.perf_counter()
  scores = [arithmetic.verify(c, EXAMPLE) for c in cases]
  for c in cases:
    arithmetic.operations(c)
  assert time.perf_counter() - start < 3.0
  # "1,1,...,7" is a comma list (no number); "---7" reads as -7.
  assert scores == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_verifiers_never_raise_on_random_strings(arithmetic, general_qa):
  rng = random.Random(0)
  pieces = ["<think>", "</think>", "7", "٧", "-", ",", ".", "=", "+", " ", "\n", "Oslo", "$",
            "\x00", "\ud800", "é", "<<", ">>", "#### ", "e5", "%"]
  qa_example = {"answer": "Oslo"}
  for _ in range(500):
    text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
    for task, example in ((arithmetic, EXAMPLE), (general_qa, qa_example)):
      score = task.verify(text, example)
      assert 0.0 <= score <= 1.0
  assert arithmetic.verify(None, EXAMPLE) == 0.0  # not even a string
