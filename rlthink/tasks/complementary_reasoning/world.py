"""The synthetic people of the complementary-reasoning world, their 39 facts and their biographies.

People [0, num_parametric) form the parametric population: their parametric biographies are the
Mem training documents. People [num_parametric, num_people) are "new": they appear only through
contextual biographies in prompts, so parametric relations are never asked from them.

Consistency: symmetric relations are perfect matchings (r(a) = b <=> r(b) = a) and inverse pairs
are a permutation and its inverse (child(a) = b <=> parent(b) = a); permutations are single cycles,
so nobody is their own child, boss or mentor. Relations of the parametric group (and their inverses)
stay inside a population, so a parametric chain from a parametric person only meets people whose
parametric facts were trained; contextual symmetric relations link both populations. With an odd
population one person has no partner for a matching relation (value -1; paths avoid it).
Dates are consistent too: everyone dies 25-95 years after birth; the address is in `lived_in`.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from typing import Mapping

from rlthink.tasks import resources
from rlthink.tasks.complementary_reasoning.relations import (
    CONTEXTUAL, INVERSE, PARAMETRIC, RELATIONS, SYMMETRIC)

NAME_LISTS = ("first_names", "last_names")
_FIRST_DAY = datetime.date(1920, 1, 1)
_LAST_BIRTH_DAY = datetime.date(1995, 12, 31)


@dataclasses.dataclass(frozen=True)
class World:
  """All people and facts.

  Attributes:
    names: full names, one per person (unique).
    num_parametric: people [0, num_parametric) have parametric biographies in training.
    facts: {relation: [per person]} with a person index (-1: none) for person relations and the
      attribute text otherwise.
  """

  names: tuple[str, ...]
  num_parametric: int
  facts: Mapping[str, list]

  @property
  def num_people(self) -> int:
    return len(self.names)

  def is_parametric(self, person: int) -> bool:
    return person < self.num_parametric

  def object_text(self, relation: str, person: int) -> str:
    """The object of relation(person) as text (a name for person relations)."""
    value = self.facts[relation][person]
    return self.names[value] if RELATIONS[relation].to_person else value


def _article(word: str) -> str:
  return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def sentence(world: World, relation: str, person: int, template: int) -> str:
  """Biography sentence `template` (0-2) of relation(person)."""
  obj = world.object_text(relation, person)
  text = RELATIONS[relation].templates[template].format(s=world.names[person], o=obj,
                                                        oa=_article(obj))
  return text[0].upper() + text[1:]


def biography(world: World, person: int, group: str, rng: random.Random) -> str:
  """The shuffled template sentences of `person`'s relations of `group` ("parametric"/"contextual").

  Relations the person lacks (an unmatched partner) are left out.
  """
  names = PARAMETRIC if group == "parametric" else CONTEXTUAL
  sentences = [sentence(world, r, person, rng.randrange(3)) for r in names
               if world.facts[r][person] != -1]
  rng.shuffle(sentences)
  return " ".join(sentences)


def _date(day: datetime.date) -> str:
  return f"{day.strftime('%B')} {day.day}, {day.year}"


def _cycle(rng: random.Random, members: list[int], size: int) -> tuple[list[int], list[int]]:
  """A one-cycle permutation of `members` and its inverse, as [size] arrays (-1 outside)."""
  forward, backward = [-1] * size, [-1] * size
  if len(members) < 2:
    return forward, backward
  order = list(members)
  rng.shuffle(order)
  for a, b in zip(order, order[1:] + order[:1]):
    forward[a], backward[b] = b, a
  return forward, backward


def _matching(rng: random.Random, members: list[int], size: int) -> list[int]:
  """A random perfect matching of `members` (one left out when odd), as a [size] array."""
  partner = [-1] * size
  order = list(members)
  rng.shuffle(order)
  for a, b in zip(order[0::2], order[1::2]):
    partner[a], partner[b] = b, a
  return partner


def build_world(seed: int, num_parametric: int, num_new: int,
                word_lists: Mapping[str, str] | None = None) -> World:
  """Draws the people and all 39 facts, deterministically from `seed`.

  Raises ValueError naming the option when more people are requested than unique names exist.
  """
  first = resources.load_words("first_names", word_lists)
  last = resources.load_words("last_names", word_lists)
  total = num_parametric + num_new
  if total > len(first) * len(last):
    raise ValueError(
        f"complementary_reasoning: num_people + num_new_people = {total} exceeds the "
        f"{len(first)} x {len(last)} = {len(first) * len(last)} unique names of the "
        f"first_names/last_names lists; lower num_people / num_new_people or give longer lists")
  rng = resources.rng_for(seed, "world", "names")
  codes = rng.sample(range(len(first) * len(last)), total)
  name_parts = [(first[c // len(last)], last[c % len(last)]) for c in codes]
  names = tuple(f"{f} {l}" for f, l in name_parts)

  facts: dict[str, list] = {}
  populations = (list(range(num_parametric)), list(range(num_parametric, total)))
  everyone = list(range(total))
  for relation in sorted(set(INVERSE) & set(PARAMETRIC)):
    rng = resources.rng_for(seed, "world", relation)
    forward, backward = [-1] * total, [-1] * total
    for members in populations:
      f, b = _cycle(rng, members, total)
      forward = [x if x != -1 else y for x, y in zip(forward, f)]
      backward = [x if x != -1 else y for x, y in zip(backward, b)]
    facts[relation], facts[INVERSE[relation]] = forward, backward
  for relation in SYMMETRIC:
    rng = resources.rng_for(seed, "world", relation)
    if relation in PARAMETRIC:
      halves = [_matching(rng, members, total) for members in populations]
      facts[relation] = [x if x != -1 else y for x, y in zip(*halves)]
    else:
      facts[relation] = _matching(rng, everyone, total)

  for relation, spec in RELATIONS.items():
    if spec.values in ("person", "date", "email", "phone", "address"):
      continue
    values = resources.load_words(spec.values, word_lists)
    rng = resources.rng_for(seed, "world", relation)
    facts[relation] = [rng.choice(values) for _ in everyone]

  rng = resources.rng_for(seed, "world", "dates")
  span = (_LAST_BIRTH_DAY - _FIRST_DAY).days
  births = [_FIRST_DAY + datetime.timedelta(days=rng.randrange(span)) for _ in everyone]
  deaths = [b + datetime.timedelta(days=rng.randrange(25 * 365, 95 * 365)) for b in births]
  facts["birth_date"] = [_date(d) for d in births]
  facts["died_on"] = [_date(d) for d in deaths]

  rng = resources.rng_for(seed, "world", "contact")
  domains = resources.load_words("email_domains", word_lists)
  streets = resources.load_words("streets", word_lists)
  facts["email"] = [f"{f}.{l}@{rng.choice(domains)}".lower().replace(" ", "")
                    for f, l in name_parts]
  facts["phone"] = [f"555-{rng.randrange(100, 1000)}-{rng.randrange(10000):04d}" for _ in everyone]
  facts["address"] = [f"{rng.randrange(1, 300)} {rng.choice(streets)}, {city}"
                      for city in facts["lived_in"]]
  return World(names=names, num_parametric=num_parametric, facts=facts)
