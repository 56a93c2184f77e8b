"""Simple syllogisms over nonsense categories: two premises are trained (in passages with random
context); the test scores all six quantifier x direction statements about the two end terms
("All A are C", "All C are A", "Some A are C", ...) as true, false or undetermined.

Labels come from `entailment`, a brute force over every model of three non-empty sets (which of the
7 Venn regions are inhabited), not from a hand-written table. Trace: recall both premises, derive
every statement about the end terms that they entail, then judge the claim.
"""

from __future__ import annotations

import itertools
import random

from rlthink.tasks.latent_generalization.common import Item, plural, with_context
from rlthink.tasks.latent_generalization.traces import derived

QUANTIFIERS = ("all", "some", "no")
LABELS = ("true", "false", "undetermined")
# Premises over terms (a, b, c) = (0, 1, 2); the statements relate a and c.
FORMS = {
    "barbara": (("all", 0, 1), ("all", 1, 2)),
    "celarent": (("no", 1, 2), ("all", 0, 1)),
    "darii": (("all", 1, 2), ("some", 0, 1)),
    "cesare": (("no", 2, 1), ("all", 0, 1)),
    "datisi": (("all", 1, 2), ("some", 1, 0)),
    "camestres": (("all", 2, 1), ("no", 0, 1)),
}
_REGIONS = [r for r in itertools.product((0, 1), repeat=3) if any(r)]  # membership in (a, b, c)


def holds(quantifier: str, x: int, y: int, inhabited: list[tuple[int, ...]]) -> bool:
  """Truth of "<quantifier> X are Y" in a model given by its inhabited Venn regions."""
  if quantifier == "all":
    return all(r[y] for r in inhabited if r[x])
  both = any(r[x] and r[y] for r in inhabited)
  return both if quantifier == "some" else not both


def entailment(premises, statement) -> str:
  """"true" if `statement` holds in every model of `premises` (non-empty terms), "false" if in
  none, else "undetermined"."""
  values = set()
  for mask in itertools.product((0, 1), repeat=len(_REGIONS)):
    inhabited = [r for r, m in zip(_REGIONS, mask) if m]
    if not all(any(r[t] for r in inhabited) for t in range(3)):
      continue
    if all(holds(q, x, y, inhabited) for q, x, y in premises):
      values.add(holds(*statement, inhabited))
  return "true" if values == {True} else "false" if values == {False} else "undetermined"


def sentence(quantifier: str, x: str, y: str) -> str:
  return f"{quantifier.capitalize()} {plural(x)} are {plural(y)}."


def generate(rng: random.Random, words: list[str], filler: list[str], num_syllogisms: int,
             passages_per_fact: int) -> tuple[list[str], list[Item]]:
  """(training passages, items): 6 statement items per syllogism over 3 fresh terms each."""
  passages, items = [], []
  forms = sorted(FORMS)
  for i in range(num_syllogisms):
    terms = words[3 * i:3 * i + 3]
    form = forms[i % len(forms)]
    premises = [sentence(q, terms[x], terms[y]) for q, x, y in FORMS[form]]
    for premise in premises:
      for _ in range(passages_per_fact):
        passages.append(with_context(rng, [premise], filler))
    statements = [(q, x, y) for q in QUANTIFIERS for x, y in ((0, 2), (2, 0))]
    follows = [derived(sentence(q, terms[x], terms[y])) for q, x, y in statements
               if entailment(FORMS[form], (q, x, y)) == "true"]
    for quantifier, x, y in statements:
      label = entailment(FORMS[form], (quantifier, x, y))
      claim = sentence(quantifier, terms[x], terms[y])
      items.append(Item(
          source="syllogism", kind="syllogism", key=f"{form}:{'/'.join(terms)}:{claim}",
          question=(f'Is the statement "{claim}" true, false, or undetermined by what you know? '
                    "Answer with one word."),
          accepted=[label] + (["unknown", "cannot be determined"] if label == "undetermined"
                              else []),
          stem=f'Is the statement "{claim}" true, false, or undetermined by what you know?',
          options=[label] + [l for l in LABELS if l != label], facts=list(premises),
          entities=list(terms),
          recall=premises + follows + [f'So the statement "{claim}" is {label}.']))
  return passages, items
