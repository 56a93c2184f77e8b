"""The math-aware verifier: equivalent and non-equivalent answer pairs (rules: math_answers.py)."""

import fractions
import random

import pytest

from rlthink.tasks import math_answers

# (answer span, reference, equivalent?) — each decided by hand from the values the texts state.
PAIRS = [
    # fractions, decimals, LaTeX
    ("3/4", "0.75", True),
    ("\\frac{3}{4}", "0.75", True),
    ("\\dfrac{3}{4}", "3/4", True),
    ("\\tfrac34", "\\frac{3}{4}", True),
    ("6/8", "\\frac{3}{4}", True),
    ("\\frac{3}{4}", "\\frac{4}{3}", False),
    ("0.3333", "1/3", False),  # exact comparison, no rounding
    ("2\\frac{1}{2}", "5/2", True),  # a mixed number
    ("\\frac{1}{2} + \\frac{1}{4}", "3/4", True),
    ("2^{-1}", "0.5", True),
    ("10^{3}", "1,000", True),
    ("x^{2} + 1", "x^2+1", True),  # same text up to braces and spaces
    # boxed answers
    ("so the answer is \\boxed{\\frac{1}{2}}.", "0.5", True),
    ("\\boxed{7} then later \\boxed{8}", "8", True),  # the last box counts
    ("\\boxed{7} then later \\boxed{8}", "7", False),
    ("$\\boxed{-\\dfrac{2}{3}}$", "-2/3", True),
    ("the value is 5", "\\boxed{5}", True),  # a boxed reference is read too
    # commas, currency, units
    ("1,234,567", "1234567", True),
    ("1{,}000", "1000", True),
    ("\\$1,234.50", "1234.5", True),
    ("12 apples", "12", True),
    ("5 \\text{ cm}", "5", True),
    ("90^\\circ", "90", True),
    ("12 apples", "13", False),
    # percents: "p%" reads as p and as p/100
    ("50\\%", "0.5", True),
    ("50%", "50", True),
    ("50%", "5", False),
    # negatives
    ("-3", "\u22123", True),  # U+2212 MINUS SIGN
    ("-3", "3", False),
    ("\\frac{-1}{2}", "-0.5", True),
    ("-\\frac{1}{2}", "\\frac{1}{-2}", True),
    # equations, prose, lists
    ("x = 5", "5", True),
    ("The answer is 42.", "42", True),
    ("She has 3/4 of the cake left.", "0.75", True),
    ("(1, 2)", "(1,2.0)", True),
    ("(1, 2)", "(2, 1)", False),  # ordered pairs keep their order
    ("[1, 2)", "(1, 2)", False),  # interval brackets count
    ("2, 1", "1, 2", True),  # an unbracketed list: the solutions in any order
    # what is not a number compares as text
    ("\\text{Paris}", "paris", True),
    ("The Beatles", "beatles", True),
    ("\\sqrt{2}", "\\sqrt{2}", True),
    ("\\sqrt{2}", "2", False),  # not "the only number in prose"
    ("2x", "2", False),
    ("x^2+1", "1", False),
    ("3 or 4", "4", False),  # two numbers: no single answer
    ("", "0", False),
    ("\\boxed{}", "0", False),
]


@pytest.mark.parametrize("answer,reference,equivalent", PAIRS)
def test_math_verifier_pairs(answer, reference, equivalent):
  assert math_answers.verify_math(answer, reference) == float(equivalent)


def test_equivalent_spellings_agree_with_exact_rational_equality():
  """Brute force: random rationals in several spellings; equal iff the Fractions are equal (a
  percent spelling "p%" also equals the reference p)."""
  rng = random.Random(0)

  def spellings(value: fractions.Fraction) -> list[str]:
    p, q = value.numerator, value.denominator
    out = [f"{p}/{q}", f"\\frac{{{p}}}{{{q}}}", f"\\boxed{{\\dfrac{{{p}}}{{{q}}}}}",
           f"{2 * p}/{2 * q}", f"The answer is {p}/{q}."]
    if 10 ** 6 % q == 0:  # a terminating decimal
      out.append(f"{float(value):.6f}")
      out.append(f"{float(value * 100):.4f}%")
    return out

  values = [fractions.Fraction(rng.randint(-40, 40), rng.choice([1, 2, 3, 4, 5, 8, 25]))
            for _ in range(12)] + [fractions.Fraction(1, 5), fractions.Fraction(20)]
  for a in values:
    for b in values[:6] + values[-1:]:
      for left in spellings(a):
        for right in spellings(b)[:3]:
          same = a == b or (left.endswith("%") and a * 100 == b)
          assert math_answers.verify_math(left, right) == float(same), (left, right)


def test_math_keys_vote_together_for_equal_values():
  assert math_answers.math_key("\\boxed{\\frac{3}{4}}") == math_answers.math_key("0.75")
  assert math_answers.math_key("so 6/8") == math_answers.math_key("3/4")
  assert math_answers.math_key("   ") is None


@pytest.mark.parametrize("text", ["\\boxed{" * 5000, "(" * 300 + "1" + ")" * 300,
                                  "10^64^64^64", "9" * 5000 + "/0", "\\frac{1}{0}", "{}" * 9000,
                                  "1" + "+1" * 20000])
def test_math_verifier_never_raises(text):
  assert math_answers.verify_math(text, "1") in (0.0, 1.0)
