"""The semantic structure: a hierarchy of nonsense-word categories with properties and inheritance.

Each category has a parent (roots have none) and 1..max_properties own properties, one per
property relation ("glorps eat zibs"); it also has every property of its ancestors. Training
documents state only memberships and own properties, never inherited ones; held-out categories
("category holdouts") are trained only as members of their parent. Test kinds:
  rephrasing        a trained fact asked as a question ("What do glorps eat?", "What kind of thing
                    is a glorp?")
  reversal          a trained fact asked backwards ("Which kind of thing eats zibs?", "Name a kind
                    of trimble.")
  syllogism         a property the category only inherits ("glorps are trimbles; trimbles eat zibs")
  category_holdout  a held-out category's inherited properties
Free answers accept every true answer (all values of the relation, all categories that qualify);
multiple-choice distractors are hard: true of some other category, false of this one. A question
about categories is only asked where at least num_choices - 1 categories answer it wrongly (so
not "Name a kind of <root>" when the whole hierarchy descends from that root).
Traces: recall the fact; an inherited property walks the membership chain up to the category that
has it (`Hierarchy.chain_to`); a reversal checks each option's own facts.
"""

from __future__ import annotations

import dataclasses
import random

from rlthink.tasks.latent_generalization.common import Item, capitalize, plural
from rlthink.tasks.latent_generalization.traces import derived, verdict

# relation: (training templates, question, reverse question, value is a noun to pluralize)
RELATIONS = {
    "have": (("{Cs} have {vs}.", "Every {c} has {vs}.", "{Cs} all have {vs}."),
             "What do {cs} have?", "Which kind of thing has {vs}?", True),
    "eat": (("{Cs} eat {vs}.", "A {c} eats {vs}.", "{Cs} like to eat {vs}."),
            "What do {cs} eat?", "Which kind of thing eats {vs}?", True),
    "live_in": (("{Cs} live in {vs}.", "A {c} lives in {vs}.", "You can find {cs} living in {vs}."),
                "Where do {cs} live?", "Which kind of thing lives in {vs}?", True),
    "are": (("{Cs} are {v}.", "Every {c} is {v}.", "A {c} is always {v}."),
            "What are {cs} like?", "Which kind of thing is {v}?", False),
    "can": (("{Cs} can {v}.", "A {c} can {v}.", "{Cs} are able to {v}."),
            "What can {cs} do?", "Which kind of thing can {v}?", False),
    "fear": (("{Cs} fear {vs}.", "A {c} is afraid of {vs}.", "{Cs} are scared of {vs}."),
             "What do {cs} fear?", "Which kind of thing fears {vs}?", True),
}
_MEMBER = ("A {c} is a kind of {p}.", "{Cs} are a type of {p}.", "Every {c} is a {p}.")


@dataclasses.dataclass
class Hierarchy:
  """Categories 0..n-1: names, parent (-1 for roots), own [(relation, value)], held-out ids."""

  names: list[str]
  parent: list[int]
  own: list[list[tuple[str, str]]]
  holdout: set[int]

  def ancestors(self, c: int) -> list[int]:
    out = []
    while self.parent[c] != -1:
      c = self.parent[c]
      out.append(c)
    return out

  def descendants(self, c: int) -> list[int]:
    return [d for d in range(len(self.names)) if c in self.ancestors(d)]

  def values(self, c: int, relation: str) -> tuple[list[str], list[str]]:
    """(own, inherited) values of `relation` for category `c`."""
    own = [v for r, v in self.own[c] if r == relation]
    inherited = [v for a in self.ancestors(c) for r, v in self.own[a] if r == relation]
    return own, inherited

  def statements(self, c: int, template: int | None, rng: random.Random | None = None) -> list[str]:
    """The trained facts of `c` (membership, own properties); template None: random per fact."""
    pick = (lambda n: template) if template is not None else (lambda n: rng.randrange(n))
    out = []
    if self.parent[c] != -1:
      out.append(self.member_fact(c, pick(3)))
    for relation, value in self.own[c]:
      out.append(self.property_fact(c, relation, value, pick(3)))
    return out

  def _slots(self, c: int) -> dict:
    name = self.names[c]
    return dict(c=name, cs=plural(name), Cs=capitalize(plural(name)))

  def member_fact(self, c: int, template: int = 0) -> str:
    """"A <c> is a kind of <parent>." (template 0: the canonical wording traces recall)."""
    return capitalize(_MEMBER[template].format(p=self.names[self.parent[c]], **self._slots(c)))

  def property_fact(self, c: int, relation: str, value: str, template: int = 0) -> str:
    """"<Cs> eat <values>." and the like (template 0: the canonical wording)."""
    return capitalize(RELATIONS[relation][0][template].format(v=value, vs=plural(value),
                                                              **self._slots(c)))

  def own_values(self, c: int, relation: str) -> list[str]:
    return [v for r, v in self.own[c] if r == relation]

  def chain_to(self, c: int, relation: str, value: str) -> list[str]:
    """Trace lines for "<c> has <value>": membership facts up to the category owning it, its
    fact, and (when inherited) the conclusion for `c`."""
    node, lines = c, []
    while value not in self.own_values(node, relation):
      lines.append(self.member_fact(node))
      node = self.parent[node]
    lines.append(self.property_fact(node, relation, value))
    return lines + ([derived(self.property_fact(c, relation, value))] if node != c else [])


def build(rng: random.Random, words: list[str], num_categories: int, max_properties: int,
          num_holdout: int, max_depth: int = 4) -> Hierarchy:
  """A random hierarchy; `words` supplies category names then property values (distinct)."""
  names = words[:num_categories]
  values = iter(words[num_categories:])
  num_roots = max(2, num_categories // 22)
  parent, depth = [-1] * num_roots, [0] * num_roots
  for _ in range(num_roots, num_categories):
    p = rng.choice([c for c in range(len(parent)) if depth[c] < max_depth - 1])
    parent.append(p)
    depth.append(depth[p] + 1)
  own = []
  for _ in range(num_categories):
    relations = rng.sample(sorted(RELATIONS), rng.randint(1, min(max_properties, len(RELATIONS))))
    own.append([(r, next(values)) for r in relations])
  leaves = [c for c in range(num_categories) if parent[c] != -1 and c not in parent]
  if num_holdout > len(leaves):
    raise ValueError(f"latent_generalization: num_holdout_categories={num_holdout} exceeds the "
                     f"{len(leaves)} leaf categories of a {num_categories}-category hierarchy")
  holdout = set(rng.sample(leaves, num_holdout))
  for c in holdout:
    own[c] = []
  return Hierarchy(names, parent, own, holdout)


def documents(rng: random.Random, h: Hierarchy, num_documents: int) -> list[str]:
  """`num_documents` short documents, categories in turn; each category's first documents cover
  all its facts (1-3 per document) in their canonical wording (template 0), later ones repeat
  random facts in random wordings."""
  order = list(range(len(h.names)))
  rng.shuffle(order)
  counts = {c: 0 for c in order}
  docs = []
  for i in range(num_documents):
    c = order[i % len(order)]
    start = 3 * counts[c]
    canonical = h.statements(c, 0)
    if start < len(canonical):
      chosen = canonical[start:start + 3]
    else:
      facts = h.statements(c, None, rng)
      chosen = rng.sample(facts, rng.randint(1, min(3, len(facts))))
    counts[c] += 1
    rng.shuffle(chosen)
    docs.append(" ".join(chosen))
  return docs


def _pick(rng, hard: list, easy: list, exclude: set, count: int) -> list | None:
  """`count` distinct choices not in `exclude`, hard ones first; None when too few exist."""
  hard = sorted(set(hard) - exclude)
  easy = sorted(set(easy) - exclude - set(hard))
  chosen = rng.sample(hard, min(count, len(hard)))
  chosen += rng.sample(easy, min(count - len(chosen), len(easy)))
  return chosen if len(chosen) == count else None


def items(rng: random.Random, h: Hierarchy, num_choices: int) -> list[Item]:
  """Every test item of the hierarchy (see the module docstring)."""
  n = len(h.names)
  name = h.names
  k = num_choices - 1
  holders = {r: {} for r in RELATIONS}  # relation -> {value: owner}
  for c in range(n):
    for r, v in h.own[c]:
      holders[r][v] = c
  all_values = {v for r in holders for v in holders[r]}
  out = []

  def item(kind, key, question, accepted, stem, options, involved, entities, recall=(),
           checks=()):
    facts = [s for c in sorted(set(involved)) for s in h.statements(c, 0)]
    rng.shuffle(facts)
    out.append(Item("semantic", kind, key, question, accepted, stem, options, facts, entities,
                    list(recall), [list(c) for c in checks]))

  def check_members(options: list[int], correct: int) -> list[list[str]]:
    return [([h.member_fact(o)] if h.parent[o] != -1 else []) + [verdict(o == correct)]
            for o in options]

  for c in range(n):
    up, down = h.ancestors(c), h.descendants(c)
    cs = plural(name[c])
    wrong = _pick(rng, [h.parent[d] for d in range(n) if h.parent[d] != -1], range(n),
                  {c, *up, *down}, k)
    if up and wrong:
      item("rephrasing", f"member:{name[c]}", f"What kind of thing is a {name[c]}?",
           [name[a] for a in up], f"What kind of thing is a {name[c]}?",
           [name[up[0]]] + [name[w] for w in wrong], [c, *up, *wrong], [name[c]],
           recall=[h.member_fact(c)])
    wrong = _pick(rng, [d for d in range(n) if h.parent[d] != -1], range(n), {c, *down}, k)
    if down and wrong:
      child = rng.choice([d for d in down if h.parent[d] == c])
      item("reversal", f"kind_of:{name[c]}", f"Name a kind of {name[c]}.",
           [name[d] for d in down] + [plural(name[d]) for d in down],
           f"Which of these is a kind of {name[c]}?", [name[child]] + [name[w] for w in wrong],
           [c, *down, *wrong], [name[c]], checks=check_members([child, *wrong], child))
    for relation, (_, question, reverse, noun) in RELATIONS.items():
      own, inherited = h.values(c, relation)
      if not own and not inherited:
        continue
      shown = plural if noun else str  # how the questions and options write a value
      correct = own + inherited
      accepted = [shown(v) for v in correct] + (correct if noun else [])
      wrong = _pick(rng, list(holders[relation]), all_values, set(correct), k)
      if wrong is None:
        raise ValueError(f"latent_generalization: too few property values for num_choices="
                         f"{num_choices}; raise num_categories")
      kind = ("category_holdout" if c in h.holdout else "rephrasing" if own else "syllogism")
      owners = {holders[relation][v] for v in correct} | {
          holders[r][w] for w in wrong for r in holders if w in holders[r]}
      item(kind, f"{relation}:{name[c]}", question.format(cs=cs), accepted,
           question.format(cs=cs), [shown(v) for v in [correct[0]] + wrong], [c, *up, *owners],
           [name[c], *correct], recall=h.chain_to(c, relation, correct[0]))
      for v in own:
        has = [c] + down
        wrong_c = _pick(rng, [holders[relation][w] for w in holders[relation]], range(n),
                        set(has), k)
        if wrong_c is None:
          continue
        item("reversal", f"{relation}_of:{v}",
             reverse.format(v=v, vs=plural(v) if noun else v),
             [name[d] for d in has] + [plural(name[d]) for d in has],
             reverse.format(v=v, vs=plural(v) if noun else v),
             [name[c]] + [name[w] for w in wrong_c], [*has, *wrong_c], [v, name[c]],
             checks=[[h.property_fact(o, relation, u) for u in h.own_values(o, relation)]
                     + [verdict(o == c)] for o in [c, *wrong_c]])
  return out
