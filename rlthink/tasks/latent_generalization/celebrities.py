"""The reversal-curse set: fictional celebrities, name <-> description.

Half the celebrities ("forward_only", the paper's set A) are trained only as "<name> is
<description>."; the other half ("both_orders", set B) also as "<description> is <name>.". The test
("reversal") asks a forward-only celebrity's name from the description, with 3 distractor names of
other celebrities; "rephrasing" asks the description from the name (the trained direction), and
both-orders celebrities' name-from-description questions are rephrasings too (trained that way).
Each celebrity's first passage states the canonical fact ("<name> is <description>.").
Traces: from the name, recall the fact; from the description, check each option by recalling its
forward fact (generate and verify).
"""

from __future__ import annotations

import random

from rlthink.tasks.latent_generalization.common import Item, capitalize, with_context
from rlthink.tasks.latent_generalization.traces import verdict

_FORWARD = ("{name} is {desc}.", "{name} is widely known as {desc}.",
            "{name} became famous as {desc}.")
_BACKWARD = ("{Desc} is {name}.", "{Desc} is none other than {name}.",
             "Ask anyone: {desc} is {name}.")


def fact(name: str, desc: str) -> str:
  """The canonical forward fact (what traces recall)."""
  return _FORWARD[0].format(name=name, desc=desc)


def descriptions(rng: random.Random, count: int, roles, adjectives, nouns,
                 taken: set[str]) -> list[str]:
  """`count` distinct descriptions ("the composer of the opera 'Amber Tide'") not in `taken`.

  Titles never start with an article, so no two descriptions match after answer normalization
  (which drops articles).
  """
  space = len(roles) * len(adjectives) * len(nouns)
  if count + len(taken) > space:
    raise ValueError(f"latent_generalization: num_celebrities x knowledge_sets needs "
                     f"{count + len(taken)} distinct descriptions; the word lists make {space}")
  out = []
  while len(out) < count:
    title = f"{rng.choice(adjectives)} {rng.choice(nouns)}"
    desc = f"{rng.choice(roles)} '{title}'"
    if desc not in taken:
      taken.add(desc)
      out.append(desc)
  return out


def generate(rng: random.Random, names: list[str], descs: list[str], filler: list[str],
             passages_per_fact: int, num_choices: int) -> tuple[list[str], list[Item]]:
  """(training passages, items) for celebrities `names[i]` <-> `descs[i]`; the first half of them
  is forward-only."""
  passages, items = [], []
  forward_only = len(names) // 2
  for i, (name, desc) in enumerate(zip(names, descs)):
    for p in range(passages_per_fact):
      if p == 0:
        text = fact(name, desc)
      elif i >= forward_only and p % 2 == 1:
        text = rng.choice(_BACKWARD).format(name=name, desc=desc, Desc=capitalize(desc))
      else:
        text = rng.choice(_FORWARD).format(name=name, desc=desc)
      passages.append(with_context(rng, [text], filler))
  for i, (name, desc) in enumerate(zip(names, descs)):
    subset = "forward_only" if i < forward_only else "both_orders"
    others = [j for j in range(len(names)) if j != i]
    if len(others) < num_choices - 1:
      raise ValueError(f"latent_generalization: num_celebrities={len(names)} leaves fewer than "
                       f"num_choices - 1 = {num_choices - 1} distractor celebrities")
    chosen = rng.sample(others, num_choices - 1)
    facts = [fact(names[j], descs[j]) for j in [i] + chosen]
    checks = [[fact(names[j], descs[j]), verdict(j == i)] for j in [i] + chosen]
    rng.shuffle(facts)
    entities = [name, desc]
    items.append(Item(
        source="reversal_curse", kind="reversal" if subset == "forward_only" else "rephrasing",
        key=f"{subset}:name:{name}", question=f"Who is {desc}? Answer with the full name.",
        accepted=[name], stem=f"Who is {desc}?", options=[name] + [names[j] for j in chosen],
        facts=facts, entities=entities, checks=checks))
    items.append(Item(
        source="reversal_curse", kind="rephrasing", key=f"{subset}:description:{name}",
        question=f"What is {name} famous for being? Answer with the description.",
        accepted=[desc], stem=f"What is {name} famous for being?",
        options=[desc] + [descs[j] for j in chosen], facts=facts, entities=entities,
        recall=[fact(name, desc)]))
  return passages, items
