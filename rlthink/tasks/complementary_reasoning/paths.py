"""Relation paths: the I.I.D. / composition / zero-shot relation split, path sampling, rendering.

Relation split (`split_relations`): the 39 relations are shuffled into I.I.D. (20%), composition
(70%) and zero-shot (10%) relations, stratified over the four strata (parametric | contextual) x
(person -> person | attribute), so each group and each relation type contributes to every kind
(with the default fractions: 8 / 27 / 4 relations). A path's kind (`path_kind`):
  - "zero_shot" when it has a zero-shot relation: test only (never in any training question);
  - "iid" when all its relations are I.I.D. relations: training paths;
  - otherwise a composition path, assigned to training or test by a seeded hash of the path
    ("composition_train" / "composition_test", about half each) - the alternation of the paper,
    independent of sampling order, so a test composition path is never a training path.
The I.I.D. test asks training paths about held-out start people.

A walk follows a path from a start person. It is valid when every hop is defined, never revisits a
person, and every parametric hop starts from a person of the parametric population (new people's
parametric facts are never trained).
"""

from __future__ import annotations

import random
from typing import Sequence

from rlthink.tasks import resources
from rlthink.tasks.complementary_reasoning.relations import (
    CONTEXTUAL, NAMES, PARAMETRIC, PERSON_RELATIONS, RELATIONS)
from rlthink.tasks.complementary_reasoning.world import World

KINDS = ("iid", "composition", "zero_shot")


def split_relations(seed: int, fractions: Sequence[float]) -> dict[str, str]:
  """{relation: "iid" | "composition" | "zero_shot"} from the (iid, composition, zero_shot)
  fractions."""
  rng = resources.rng_for(seed, "relation_split")
  kinds = {}
  for group in (PARAMETRIC, CONTEXTUAL):
    for to_person in (True, False):
      stratum = [r for r in group if RELATIONS[r].to_person == to_person]
      rng.shuffle(stratum)
      n_zero = int(fractions[2] * len(stratum) + 0.5)
      n_iid = int(fractions[0] * len(stratum) + 0.5)
      for i, relation in enumerate(stratum):
        kinds[relation] = ("zero_shot" if i < n_zero else "iid" if i < n_zero + n_iid
                           else "composition")
  return {r: kinds[r] for r in NAMES}


def path_kind(seed: int, kinds: dict[str, str], path: Sequence[str]) -> str:
  """"zero_shot", "iid", "composition_train" or "composition_test" (see the module docstring)."""
  relation_kinds = {kinds[r] for r in path}
  if "zero_shot" in relation_kinds:
    return "zero_shot"
  if relation_kinds == {"iid"}:
    return "iid"
  return "composition_" + ("train" if resources.stable_bit(seed, "path", *path) == 0 else "test")


def groups(path: Sequence[str]) -> set[str]:
  return {RELATIONS[r].group for r in path}


_PARAMETRIC = frozenset(PARAMETRIC)
_TO_PERSON = frozenset(PERSON_RELATIONS)


def can_hop(world: World, relation: str, person: int, visited: set[int]) -> bool:
  """Whether `relation` can be asked from `person` in a walk that has met `visited`."""
  if relation in _PARAMETRIC and person >= world.num_parametric:
    return False
  if relation not in _TO_PERSON:
    return True
  target = world.facts[relation][person]
  return target != -1 and target not in visited


def walk(world: World, start: int, path: Sequence[str]) -> list | None:
  """The entities [start, e1, ..., answer] reached along `path` (people as indices, the final
  attribute as text), or None when the walk is invalid from `start`."""
  entities, visited, current = [start], {start}, start
  for i, relation in enumerate(path):
    if not can_hop(world, relation, current, visited):
      return None
    if i < len(path) - 1 and not RELATIONS[relation].to_person:
      return None
    current = world.facts[relation][current]
    entities.append(current)
    if RELATIONS[relation].to_person:
      visited.add(current)
  return entities


def random_path(rng: random.Random, world: World, start: int, hops: int,
                allowed: Sequence[str]) -> list[str] | None:
  """A uniformly random valid path of `hops` relations from `allowed` (person relations on every
  hop but the last), or None at a dead end."""
  person_allowed = [r for r in allowed if r in PERSON_RELATIONS]
  path, visited, current = [], {start}, start
  for hop in range(hops):
    candidates = allowed if hop == hops - 1 else person_allowed
    for _ in range(8):  # rejection first: the same uniform choice, usually without the filter
      relation = candidates[rng.randrange(len(candidates))] if candidates else None
      if relation is None or can_hop(world, relation, current, visited):
        break
    else:
      options = [r for r in candidates if can_hop(world, r, current, visited)]
      relation = options[rng.randrange(len(options))] if options else None
    if relation is None:
      return None
    path.append(relation)
    if RELATIONS[relation].to_person:
      current = world.facts[relation][current]
      visited.add(current)
  return path


def question(world: World, start: int, path: Sequence[str]) -> str:
  """"Who is the spouse of the boss of Alice Smith?" (What ... for an attribute)."""
  phrase = world.names[start]
  for relation in path:
    phrase = RELATIONS[relation].noun_phrase(phrase)
  return f"{'Who' if RELATIONS[path[-1]].to_person else 'What'} is {phrase}?"


def entity_text(world: World, entity) -> str:
  return world.names[entity] if isinstance(entity, int) else entity


def steps(world: World, entities: Sequence, path: Sequence[str]) -> list[str]:
  """One sentence per hop: "The boss of Alice Smith is Bob Jones."."""
  out = []
  for subject, obj, relation in zip(entities, entities[1:], path):
    text = RELATIONS[relation].noun_phrase(entity_text(world, subject))
    out.append(f"{text[0].upper()}{text[1:]} is {entity_text(world, obj)}.")
  return out
