"""Answer extraction shared by every verifier: the thinking/answer split, numbers and text.

Decisions (each verifier relies on them; tests/tasks/test_answers.py pins them down):
- Thinking span: the answer span is the text after the one `think_close`. It is None (score 0)
  when a thinking span was opened and not closed (also when one is re-opened after the close),
  when `think_close` appears more than once ("<think>5-1=1</think>1</think>0" is malformed, not
  an answer of 0: a policy must not earn reward by appending "</think>N" guesses), and, with
  `require_thinking`, when there is no closed thinking span at all. Text before the first
  `think_open` is ignored. So an answer written only inside the thinking span never counts.
- Several answers: the LAST number (or the last non-empty line, for text answers) of the answer span
  counts; "8 or 9" answers 9. Comma-glued lists ("8,9", "(3,4)") hold no number.
- Digits: every Unicode decimal digit (category Nd: fullwidth "４２", Arabic-Indic "٤٢", ...) reads as
  its value; look-alikes that are not decimal digits (superscripts, circled digits, the letter O) do
  not, and a number they continue ("7²", "7½") is no number. U+2212 MINUS SIGN reads as "-".
  Text answers are compared after NFKC + casefold.
- Numbers: thousands separators ("1,000"), currency and units ("$5", "12 apples", "50%") and leading
  zeros ("007") are accepted; numbers compare exactly as Decimals (no float rounding, any size).
- All patterns are linear-time (no nested quantifiers), so 100k-character completions are cheap.
"""

from __future__ import annotations

import dataclasses
import decimal
import re
import string
import unicodedata

_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")  # `\d` on str patterns is exactly category Nd.
# Digit look-alikes that must not end a number ("7²" is not 7, "7½" is not 7).
_DIGITLIKE = "¹²³⁰⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉¼½¾⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"
# A number: optional sign, digits with optional thousands groups, optional fraction; not glued to
# a word, "." or "," on its left, nor continued by a digit, look-alike or exponent ("1e400") on its
# right. Blocking starts after "," and "." keeps the scan linear ("1,2,3" and "(3,4)" hold no
# number).
_NUMBER = re.compile(r"(?<![\w.,])-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?"
                     rf"(?![.,]?[0-9{_DIGITLIKE}]|[eE][-+]?[0-9])")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class Split:
  """A completion cut at the thinking boundary. answer None means "no valid answer span"."""

  thinking: str | None
  answer: str | None


def split_thinking(text: str, think_open: str = "<think>", think_close: str = "</think>", *,
                   require_thinking: bool = True, opened_in_prompt: bool = False) -> Split:
  """Cuts `text` into (thinking, answer) spans; see the module docstring for the rules.

  opened_in_prompt: the prompt ended with `think_open`, so `text` starts inside the thinking span.
  """
  if opened_in_prompt:
    text = think_open + text
  close = text.find(think_close)
  if close < 0:
    if think_open in text or require_thinking:
      return Split(thinking=None, answer=None)
    return Split(thinking=None, answer=text)
  answer = text[close + len(think_close):]
  if think_close in answer:  # a second close: malformed, never an answer
    return Split(thinking=None, answer=None)
  if think_open in answer:  # thinking re-opened and never closed
    return Split(thinking=None, answer=None)
  start = text.find(think_open)
  if start < 0 or start > close:
    start, skip = 0, 0  # a close without an open: everything before it is thinking
  else:
    skip = len(think_open)
  return Split(thinking=text[start + skip:close], answer=answer)


def to_ascii_digits(text: str) -> str:
  """Every Unicode decimal digit to its ASCII digit; U+2212 MINUS SIGN to "-"."""
  text = text.replace("\u2212", "-")
  if text.isascii():
    return text
  return _NON_ASCII_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group())), text)


def find_numbers(text: str) -> list[str]:
  """The number strings in `text`, in order, ASCII digits, separators kept ("1,000", "-2.5")."""
  return _NUMBER.findall(to_ascii_digits(text))


def parse_number(text: str) -> decimal.Decimal | None:
  """The exact value of one number string ("1,000", "$5", "12 apples", "٤٢"), else None.

  Accepts a single number possibly wrapped in non-digit text; None when there is no number or more
  than one.
  """
  found = find_numbers(text)
  if len(found) != 1:
    return None
  return decimal.Decimal(found[0].replace(",", ""))


def last_number(text: str) -> decimal.Decimal | None:
  """The exact value of the last number in `text`, else None."""
  found = find_numbers(text)
  return decimal.Decimal(found[-1].replace(",", "")) if found else None


def numbers_equal(predicted: decimal.Decimal | None, reference: decimal.Decimal | None) -> bool:
  """Exact equality (5 == 5.0 == 005; no rounding at any size); None never matches."""
  return predicted is not None and reference is not None and predicted == reference


def verify_number(answer_span: str, reference: str | int | float) -> float:
  """1.0 when the last number of `answer_span` equals `reference` exactly, else 0.0."""
  ref = parse_number(str(reference))
  if ref is None:
    raise ValueError(f"reference answer {reference!r} is not a single number")
  return 1.0 if numbers_equal(last_number(answer_span), ref) else 0.0


def number_key(answer_span: str) -> str | None:
  """The canonical spelling of the number `verify_number` reads from `answer_span` (its last):
  "8", "8.0", "$8" and "８" all give "8"; None when there is none. What majority votes compare."""
  number = last_number(answer_span)
  return None if number is None else canonical_number(format(number, "f"))


def normalize_text(text: str) -> str:
  """Text answer normal form: NFKC, casefold, ASCII digits, no punctuation/articles, one space."""
  text = to_ascii_digits(unicodedata.normalize("NFKC", text)).casefold()
  text = _ARTICLES.sub(" ", _PUNCT.sub(" ", text))
  return _SPACE.sub(" ", text).strip()


def last_line(text: str) -> str:
  """The last non-empty line of `text` ("" when none)."""
  for line in reversed(text.splitlines()):
    if line.strip():
      return line
  return ""


def answer_after(text: str, marker: str) -> str | None:
  """The text after the last `marker` (e.g. "So, the answer is:"), else None."""
  at = text.rfind(marker)
  return None if at < 0 else text[at + len(marker):]


def verify_text(answer_span: str, reference: str, marker: str | None = None) -> float:
  """1.0 when the answer equals `reference` after `normalize_text`, else 0.0.

  The answer is the text after the last `marker` when given (0 when the marker is missing), else
  the last non-empty line of the span.
  """
  if marker is not None:
    after = answer_after(answer_span, marker)
    if after is None:
      return 0.0
    answer_span = after
  predicted = normalize_text(last_line(answer_span))
  return 1.0 if predicted and predicted == normalize_text(reference) else 0.0


# An arithmetic chain "a op b op c ..." optionally followed by "= r". Matched greedily and scanned
# left to right once (each chain is consumed whole), so it stays linear on any input.
_NUM = r"-?[0-9][0-9,]*(?:\.[0-9]+)?"
_CHAIN = re.compile(rf"(?<![\w.]){_NUM}(?:[ \t]*[-+*/×÷][ \t]*{_NUM})*(?:[ \t]*=[ \t]*{_NUM})?")
_OP_CHARS = {"×": "*", "÷": "/"}
_SPLIT_OPS = re.compile(r"(?<=[0-9])[ \t]*([-+*/×÷])[ \t]*")


def canonical_number(text: str) -> str:
  """"007" -> "7", "1,000" -> "1000", "2.50" -> "2.5", "-0" -> "0": a number's exact spelling."""
  text = text.replace(",", "")
  sign = "-" if text.startswith("-") else ""
  whole, _, frac = text.lstrip("-").partition(".")
  whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
  if whole == "0" and not frac:
    sign = ""
  return sign + whole + ("." + frac if frac else "")


def find_equations(text: str) -> list[tuple[str, str]]:
  """The equations "a op b ... = r" in `text` as (canonical expression, canonical result).

  GSM8K calculator annotations ("<<48/2=24>>") count; expressions without an operator or without
  "= r" do not. Operators are canonicalized to + - * /; numbers as in `canonical_number`.
  """
  found = []
  for match in _CHAIN.finditer(to_ascii_digits(text)):
    left, eq, right = match.group().partition("=")
    if not eq:
      continue
    parts = _SPLIT_OPS.split(left.strip())
    if len(parts) < 3:
      continue
    expression = "".join(canonical_number(p) if i % 2 == 0 else _OP_CHARS.get(p, p)
                         for i, p in enumerate(parts))
    found.append((expression, canonical_number(right.strip())))
  return found


def operators(expression: str) -> tuple[str, ...]:
  """The operators of an expression, in order: "7--2*3" -> ("-", "*")."""
  return tuple(_OP_CHARS.get(op, op) for op in _SPLIT_OPS.split(expression)[1::2])
