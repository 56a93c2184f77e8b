"""Simple reversals: comparison facts between nonsense-word entities ("The wug is taller than the
dax."), each in several training passages with random context; the test asks the reversed fact
("Is the dax taller or shorter than the wug?") as a forced choice between the correct reversal and
its contradiction. The same question in the trained direction is the "rephrasing" control.
Every passage template contains the canonical `statement` (what a trace recalls).
Trace: recall the trained fact, then (for the reversal) derive the reversed one.
"""

from __future__ import annotations

import random

from rlthink.tasks.latent_generalization.common import Item, with_context
from rlthink.tasks.latent_generalization.traces import derived

# 28 comparison dimensions: (comparative, opposite comparative); all 56 words distinct.
DIMENSIONS = (
    ("taller", "shorter"), ("heavier", "lighter"), ("older", "younger"), ("faster", "slower"),
    ("stronger", "weaker"), ("richer", "poorer"), ("louder", "quieter"), ("brighter", "dimmer"),
    ("warmer", "colder"), ("wider", "narrower"), ("deeper", "shallower"), ("harder", "softer"),
    ("smoother", "rougher"), ("sweeter", "sourer"), ("wetter", "drier"), ("thicker", "thinner"),
    ("happier", "sadder"), ("bolder", "shyer"), ("kinder", "meaner"), ("cleaner", "dirtier"),
    ("cheaper", "pricier"), ("busier", "idler"), ("wiser", "sillier"), ("calmer", "wilder"),
    ("bigger", "smaller"), ("earlier", "later"), ("nearer", "farther"), ("sharper", "duller"),
)
_TEMPLATES = ("The {a} is {more} than the {b}.", "It is known that the {a} is {more} than the {b}.",
              "Everyone agrees that the {a} is {more} than the {b}.")


def statement(a: str, comparative: str, b: str) -> str:
  return f"The {a} is {comparative} than the {b}."


def generate(rng: random.Random, words: list[str], filler: list[str], num_facts: int,
             passages_per_fact: int) -> tuple[list[str], list[Item]]:
  """(training passages, items) for `num_facts` facts over 2 * num_facts fresh entity words."""
  passages, items = [], []
  facts = []
  for i in range(num_facts):
    a, b = words[2 * i], words[2 * i + 1]
    more, less = DIMENSIONS[i % len(DIMENSIONS)] if i < len(DIMENSIONS) else rng.choice(DIMENSIONS)
    facts.append((a, more, less, b))
    for _ in range(passages_per_fact):
      fact = rng.choice(_TEMPLATES).format(a=a, more=more, b=b)
      passages.append(with_context(rng, [fact], filler))
  for a, more, less, b in facts:
    others = [statement(x, m, y) for x, m, _, y in rng.sample(facts, min(4, len(facts)))
              if x != a]
    context = [statement(a, more, b)] + others[:3]
    pair = [more, less] if rng.random() < 0.5 else [less, more]
    known = statement(a, more, b)
    items.append(Item(
        source="simple_reversal", kind="reversal", key=f"{a}>{b}",
        question=f"Is the {b} {pair[0]} or {pair[1]} than the {a}? Answer with one word.",
        accepted=[less], stem=f"Which statement about the {b} and the {a} is true?",
        options=[statement(b, less, a), statement(b, more, a)], facts=context, entities=[a, b],
        recall=[known, derived(statement(b, less, a))]))
    items.append(Item(
        source="simple_reversal", kind="rephrasing", key=f"{a}>{b}",
        question=f"Is the {a} {pair[0]} or {pair[1]} than the {b}? Answer with one word.",
        accepted=[more], stem=f"Which statement about the {a} and the {b} is true?",
        options=[statement(a, more, b), statement(a, less, b)], facts=context, entities=[a, b],
        recall=[known]))
  return passages, items
