"""Pieces shared by the latent-generalization sources: test items and passages with random context.

Each source (simple reversals, syllogisms, the reversal-curse celebrities, the semantic hierarchy)
turns one knowledge set into training documents (plain text written into the weights by SFT) and
test `Item`s. An item holds both answer forms: a free-answer question with the accepted answers, and
a multiple-choice stem with options (the correct one first; `dataset.py` shuffles them), and the
pieces of its warm-start thinking trace (`traces.py` writes them out).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

KINDS = ("rephrasing", "reversal", "syllogism", "category_holdout")

_FILLER = (
    "The weather in {x} was mild that season.",
    "Nobody in {x} remembers the old {y} anymore.",
    "A traveler once rested near {x} for a night.",
    "Later that week, the market in {x} was busy.",
    "The road to {x} was long and dusty.",
    "Children in {x} often play by the {y}.",
    "It rained all morning over {x}.",
    "The library in {x} closed early that day.",
    "A painting of the {y} hangs in a hall in {x}.",
    "Some visitors to {x} left before sunrise.",
    "The bells of {x} rang twice at noon.",
    "Merchants from {x} sold cloth and lamps.",
)


@dataclasses.dataclass
class Item:
  """One question about one knowledge set.

  Attributes:
    source: "simple_reversal" | "syllogism" | "reversal_curse" | "semantic".
    kind: one of KINDS (the test split it belongs to).
    key: what the item tests, unique within its source and knowledge set (for leakage checks).
    question: the free-answer question; accepted: every accepted free answer (answer first).
    stem: the multiple-choice question; options: the choices, the correct one first.
    facts: the statements an in-context prompt shows (the relevant facts, plus distractor facts).
    entities: the names / nonsense words the item is about.
    recall: the trace's lines before any option is checked: trained facts recalled in their
      canonical wording, and "So ..." lines derived from them (see `traces.py`).
    checks: per option (aligned with `options`), the lines that check it (trained facts, then
      `traces.MATCH` or `traces.NO_MATCH`); empty when the answer follows from `recall` alone.
  """

  source: str
  kind: str
  key: str
  question: str
  accepted: list[str]
  stem: str
  options: list[str]
  facts: list[str]
  entities: list[str]
  recall: list[str] = dataclasses.field(default_factory=list)
  checks: list[list[str]] = dataclasses.field(default_factory=list)


def plural(word: str) -> str:
  return word + "s"


def capitalize(text: str) -> str:
  return text[:1].upper() + text[1:]


def with_context(rng: random.Random, statements: Sequence[str], filler_words: Sequence[str],
                 sentences: tuple[int, int] = (1, 3)) -> str:
  """A short passage: `statements` in order, among random filler sentences about other words."""
  filler = []
  for _ in range(rng.randint(*sentences)):
    x, y = rng.sample(list(filler_words), 2)
    filler.append(rng.choice(_FILLER).format(x=capitalize(x), y=y))
  at = rng.randint(0, len(filler))
  return " ".join(filler[:at] + list(statements) + filler[at:])


def distractors(rng: random.Random, pool: Sequence[str], exclude: set[str], count: int,
                option: str) -> list[str]:
  """`count` distinct members of `pool` not in `exclude`; error naming `option` when too few."""
  candidates = sorted(set(pool) - set(exclude))
  if len(candidates) < count:
    raise ValueError(f"latent_generalization: only {len(candidates)} distractors available where "
                     f"{count} are needed; raise option {option} or lower num_choices")
  return rng.sample(candidates, count)
