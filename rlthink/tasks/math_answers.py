"""Math-aware answer comparison: is the answer "\\dfrac{3}{4}" the reference "0.75"?

`verify_math(answer_span, reference)` reads one answer from each side and compares them:
- Reading: the content of the last `\\boxed{...}` / `\\fbox{...}` when there is one; else the text
  after the last "answer is" / "answer:" of the last non-empty line, else that line. The reference
  is read the same way but whole (no last-line cut).
- Cleaning: LaTeX spacing, `\\left`/`\\right`, `$`, degrees and `\\text{...}` wrappers go;
  `\\dfrac`/`\\tfrac` are `\\frac`, `\\cdot`/`\\times` are `*`, `\\div` is `/`, `\\%` is `%`;
  thousands separators ("1,000", "1{,}000") go; Unicode digits and U+2212 read as ASCII.
- Values: the cleaned text after its last "=" ("x = 5" reads 5) is evaluated exactly as a
  `Fraction` over numbers, + - * /, integer powers, parentheses/braces, `\\frac{a}{b}` (also
  `\\frac34`)
  and mixed numbers (`2\\frac{1}{2}` is 5/2). Trailing unit words ("12 apples", "5 \\text{cm}") are
  dropped; failing all that, a text holding exactly one number or fraction reads as it ("The
  total is 42 apples."). "p%" reads as both p and p/100 ("50%" matches "50" and "0.5").
  Comma-separated lists compare element-wise; bracketed ones ("(1, 2)") also by bracket kind.
- Equal when the compact texts (no whitespace, casefolded) are equal, or when the values are,
  exactly; else, for a reference without digits, when `answers.normalize_text` forms are equal.
  Irrational forms (`\\sqrt{2}`, `\\pi`) compare only as text.
Every function here is total: bad input reads as "no value", never raises, and stays linear-time.
"""

from __future__ import annotations

import fractions
import re

from rlthink.tasks import answers

Fraction = fractions.Fraction
_MAX_PARSE_CHARS = 400  # longer readings are compared as text only
_MAX_EXPONENT = 64
_MAX_BITS = 4096  # no value beyond ~1e1233: "10^64^64" is no number

_TEXT_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DROP = re.compile(r"\\left|\\right|\\[!,;: ]|\\displaystyle|~|\\\$|\$|\^\s*\{?\s*\\circ\s*\}?|°")
_REPLACE = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cdot", "*"), ("\\times", "*"),
            ("\\div", "/"), ("\\%", "%"), ("{,}", ","), ("\\{", "{"), ("\\}", "}"))
_FRAC_SHORT = (re.compile(r"\\frac\s*([0-9])\s*([0-9])"), re.compile(r"\\frac\s*([0-9])\s*\{"),
               re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9])"))
_SINGLE_BRACE = re.compile(r"([\^_])\{\s*(\w)\s*\}")  # "x^{2}" is "x^2"
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_TRAILING_WORDS = re.compile(r"(?<=[0-9)}%])\s+[A-Za-z][A-Za-z .]*$")
# One number or fraction alone in prose ("The total is 42 apples."), not "2x" or "\\sqrt{2}".
_ATOM = re.compile(r"(?<![\w\\])-?(?:\\frac\{-?[0-9.]+\}\{-?[0-9.]+\}"
                   r"|[0-9]+(?:\.[0-9]+)?(?:/[0-9]+)?%?)(?![\w\\])")
_PROSE = re.compile(r"[A-Za-z\s.,:;!?'\"]*")
_MARKERS = ("answer is", "answer:")
_TOKEN = re.compile(r"\s*(\\frac|\\[A-Za-z]+|[0-9]+(?:\.[0-9]*)?|\.[0-9]+|[-+*/^(){}])")
_OPEN = {"(": ")", "[": "]", "{": "}"}


def last_boxed(text: str) -> str | None:
  """The content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`), else None."""
  at = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if at < 0:
    return None
  rest = text[at + (6 if text.startswith("\\boxed", at) else 5):]
  stripped = rest.lstrip()
  if not stripped.startswith("{"):
    word = rest.split("$")[0].strip().split()
    return word[0] if rest[:1].isspace() and word else None
  depth = 0
  for i, ch in enumerate(stripped):
    depth += {"{": 1, "}": -1}.get(ch, 0)
    if depth == 0:
      return stripped[1:i]
  return None  # unbalanced


def read_answer(text: str, whole: bool = False) -> str:
  """The answer text a span states (see the module docstring); `whole` keeps every line."""
  found = last_boxed(text)
  if found is not None:
    return found.strip()
  line = text.strip() if whole else answers.last_line(text)
  folded = line.casefold()
  at = max((folded.rfind(m) + len(m) if folded.rfind(m) >= 0 else -1) for m in _MARKERS)
  if at >= 0:
    line = line[at:]
  return line.strip().strip(":").strip()


def clean(text: str) -> str:
  """The LaTeX-light normal form of an answer text (module docstring, "Cleaning")."""
  text = answers.to_ascii_digits(text)
  text = _TEXT_WRAPPERS.sub(lambda m: " " + m.group(1) + " ", text)
  text = _DROP.sub("", text)
  for old, new in _REPLACE:
    text = text.replace(old, new)
  text = _FRAC_SHORT[0].sub(r"\\frac{\1}{\2}", text)
  text = _FRAC_SHORT[1].sub(r"\\frac{\1}{", text)
  text = _FRAC_SHORT[2].sub(r"\\frac\1{\2}", text)
  text = _SINGLE_BRACE.sub(r"\1\2", text)
  text = _THOUSANDS.sub("", text)
  return text.strip().rstrip(".").strip()


def _check(value: Fraction) -> Fraction:
  if value.numerator.bit_length() > _MAX_BITS or value.denominator.bit_length() > _MAX_BITS:
    raise ValueError("too large")
  return value


class _Parser:
  """Recursive descent over + - * / ^, parentheses/braces, \\frac and mixed numbers; exact."""

  def __init__(self, text: str):
    self.tokens, pos = [], 0
    while pos < len(text):
      match = _TOKEN.match(text, pos)
      if not match:
        if text[pos:].strip():
          raise ValueError(f"bad character {text[pos]!r}")
        break
      self.tokens.append(match.group(1))
      pos = match.end()
    self.at = 0

  def peek(self) -> str | None:
    return self.tokens[self.at] if self.at < len(self.tokens) else None

  def take(self, expected: str | None = None) -> str:
    token = self.peek()
    if token is None or (expected is not None and token != expected):
      raise ValueError(f"expected {expected or 'more'}, got {token!r}")
    self.at += 1
    return token

  def parse(self) -> Fraction:
    value = self.expr()
    if self.peek() is not None:
      raise ValueError(f"unexpected {self.peek()!r}")
    return value

  def expr(self) -> Fraction:
    value = self.term()
    while self.peek() in ("+", "-"):
      value = _check(value + self.term() if self.take() == "+" else value - self.term())
    return value

  def term(self) -> Fraction:
    value = self.unary()
    while self.peek() in ("*", "/"):
      op, right = self.take(), self.unary()
      if op == "/" and right == 0:
        raise ValueError("division by zero")
      value = _check(value * right if op == "*" else value / right)
    return value

  def unary(self) -> Fraction:
    if self.peek() in ("-", "+"):
      return -self.unary() if self.take() == "-" else self.unary()
    return self.power()

  def power(self) -> Fraction:
    base = self.atom()
    if self.peek() != "^":
      return base
    self.take()
    exponent = self.unary()
    if exponent.denominator != 1 or abs(exponent) > _MAX_EXPONENT or (base == 0 and exponent < 0):
      raise ValueError("unsupported exponent")
    return _check(base ** int(exponent))

  def atom(self) -> Fraction:
    token = self.take()
    if token in ("(", "{"):
      value = self.expr()
      self.take(")" if token == "(" else "}")
      return value
    if token == "\\frac":
      return self.frac()
    if token[0].isdigit() or token[0] == ".":
      value = Fraction(token)
      if self.peek() == "\\frac":  # a mixed number: 2\frac{1}{2} is 5/2
        self.take()
        return value + self.frac()
      return value
    raise ValueError(f"unsupported {token!r}")

  def frac(self) -> Fraction:
    self.take("{")
    top = self.expr()
    self.take("}")
    self.take("{")
    bottom = self.expr()
    self.take("}")
    if bottom == 0:
      raise ValueError("division by zero")
    return _check(top / bottom)


def _split_top_level(text: str) -> list[str]:
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  return parts + [text[start:]]


def _number(text: str) -> frozenset[Fraction] | None:
  """The readings of one cleaned scalar: {value} or, with "%", {p, p/100}; None when none."""
  text = text.strip()
  percent = text.endswith("%")
  text = text.rstrip("%").strip()
  try:
    value = _Parser(text).parse() if text else None
  except (ValueError, ZeroDivisionError, ArithmeticError, RecursionError):
    value = None
  if value is None:
    return None
  return frozenset({value, value / 100}) if percent else frozenset({value})


def _scalar(text: str) -> frozenset[Fraction] | None:
  """`_number` of the text, else of it without trailing unit words, else of its only number."""
  for candidate in (text, _TRAILING_WORDS.sub("", text)):
    found = _number(candidate)
    if found is not None:
      return found
  atoms = _ATOM.findall(text)
  if len(atoms) == 1 and _PROSE.fullmatch(_ATOM.sub(" ", text)):
    return _number(atoms[0])
  return None


def value(text: str):
  """The exact value of a cleaned answer: a frozenset of Fraction readings, a tuple (bracket
  kind, readings...) for bracketed or comma-separated lists, or None when it is no number."""
  if len(text) > _MAX_PARSE_CHARS:
    return None
  text = text.rpartition("=")[2].strip() if "=" in text else text
  bracket = text[:1] + text[-1:] if text[:1] in "([" and text[-1:] in ")]" else ""
  inner = text[1:-1] if bracket else text
  parts = _split_top_level(inner)
  if len(parts) == 1:
    return _scalar(text)
  readings = [_scalar(p) for p in parts]
  if any(r is None for r in readings):
    return None
  if not bracket:  # "1, 2, 3": the solutions in any order
    readings = sorted(readings, key=lambda r: min(r))
  return (bracket, *readings)


def _same(a, b) -> bool:
  if isinstance(a, frozenset) and isinstance(b, frozenset):
    return bool(a & b)
  if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and a[0] == b[0]:
    return all(_same(x, y) for x, y in zip(a[1:], b[1:]))
  return False


def _compact(text: str) -> str:
  return re.sub(r"\s+", "", text).casefold()


def equivalent(predicted: str, reference: str) -> bool:
  """Whether two answer texts (already read, e.g. by `read_answer`) state the same answer."""
  p, r = clean(predicted), clean(reference)
  if not p:
    return False
  if _compact(p) == _compact(r):
    return True
  vp, vr = value(p), value(r)
  if vp is not None and vr is not None:
    return _same(vp, vr)
  if vr is None and not any(ch.isdigit() for ch in r):
    text = answers.normalize_text(p)
    return bool(text) and text == answers.normalize_text(r)
  return False


def verify_math(answer_span: str, reference: str) -> float:
  """1.0 when the answer the span states is mathematically the reference's, else 0.0."""
  try:
    return 1.0 if equivalent(read_answer(answer_span), read_answer(reference, whole=True)) else 0.0
  except RecursionError:  # deeply nested braces: no answer
    return 0.0


def math_key(answer_span: str) -> str | None:
  """What majority votes compare: the exact value's spelling ("3/4" for "\\frac{3}{4}" and
  "0.75"), else the compact cleaned text; None when the span states nothing."""
  text = clean(read_answer(answer_span))
  if not text:
    return None
  found = value(text)
  if isinstance(found, frozenset):
    return str(max(found))  # "50%" votes with "50"
  return repr(found) if found is not None else _compact(text)
