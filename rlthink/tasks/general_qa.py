"""general_qa: free-form questions over given facts, where a surface shortcut often works.

For START (paper 2): rewards on general QA can be earned without good thinking. Each prompt lists
facts about a few people and asks about a relative of one of them:

    Facts: Ava lives in Oslo. Ben is Ava's friend. Ben lives in Oslo. Cal is Ava's boss. ...
    Question: Where does Ava's friend live?

Reasoning over the facts (Ava's friend is Ben; Ben lives in Oslo) always answers right. The
shortcut answers with the value of the person named in the question (Ava lives in Oslo) without
following the relation; it is right exactly when the example's "shortcut_works" is true, which is
drawn with probability `shortcut_rate`. Every person has one fact of the asked attribute, so the
shortcut is always available. With `max_hops` > 1 the relation chain is longer ("Ava's friend's
boss"). The reward (`verify`) looks only at the final answer: the last line of the answer span,
compared with the reference after `answers.normalize_text`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from rlthink.tasks import answers
from rlthink.tasks.base import Task

_PEOPLE = ("Ava", "Ben", "Cal", "Dan", "Eve", "Fay", "Gus", "Hal", "Ida", "Jon", "Kim", "Lea",
           "Max", "Ned", "Oda", "Pia", "Rex", "Sid", "Tia", "Uma", "Vic", "Wes", "Yan", "Zed")
_RELATIONS = ("friend", "boss", "sister", "brother", "neighbor", "teacher", "cousin", "partner")
# attribute: (fact template, question template, values)
_ATTRIBUTES = {
    "city": ("{p} lives in {v}.", "Where does {q} live?",
             ("Oslo", "Rome", "Lima", "Kyiv", "Doha", "Riga", "Baku", "Bern", "Cork", "Faro")),
    "job": ("{p} works as a {v}.", "What does {q} work as?",
            ("baker", "nurse", "pilot", "judge", "miner", "tailor", "farmer", "chef", "poet")),
    "pet": ("{p} owns a {v}.", "What pet does {q} own?",
            ("cat", "dog", "horse", "parrot", "rabbit", "turtle", "goat", "hamster", "snake")),
    "food": ("{p} likes {v}.", "What food does {q} like?",
             ("rice", "bread", "soup", "pasta", "tacos", "sushi", "curry", "salad", "pie")),
}


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options; each example has `num_people` people (>= max_hops + 2)."""

  seed: int = 0
  size: str = "default"
  num_train: int = 10000
  num_test: int = 1000
  shortcut_rate: float = 0.7
  num_people: int = 5
  min_hops: int = 1
  max_hops: int = 2

  def __post_init__(self):
    checks = [("num_train", self.num_train >= 0), ("num_test", self.num_test >= 0),
              ("shortcut_rate", 0.0 <= self.shortcut_rate <= 1.0),
              ("min_hops", 1 <= self.min_hops <= self.max_hops),
              ("num_people", self.max_hops + 2 <= self.num_people <= len(_PEOPLE))]
    for name, ok in checks:
      if not ok:
        raise ValueError(f"general_qa: invalid option {name}={getattr(self, name)!r} in {self} "
                         f"(need num_* >= 0, 0 <= shortcut_rate <= 1, 1 <= min_hops <= max_hops, "
                         f"max_hops + 2 <= num_people <= {len(_PEOPLE)})")


def sample_problem(rng: np.random.Generator, opts: Options) -> dict:
  """One example (all fields but "id")."""
  people = [str(p) for p in rng.choice(_PEOPLE, size=opts.num_people, replace=False)]
  attribute = list(_ATTRIBUTES)[rng.integers(len(_ATTRIBUTES))]
  fact_template, question_template, values = _ATTRIBUTES[attribute]
  hops = int(rng.integers(opts.min_hops, opts.max_hops + 1))
  chain = people[:hops + 1]  # chain[0] is named in the question, chain[-1] holds the answer
  relations = [str(r) for r in rng.choice(_RELATIONS, size=hops)]
  # A distractor relation from the named person, to someone off the chain.
  other_relation = str(rng.choice([r for r in _RELATIONS if r != relations[0]]))
  value_of = {p: str(values[rng.integers(len(values))]) for p in people}
  shortcut_works = bool(rng.random() < opts.shortcut_rate)
  if shortcut_works:
    value_of[chain[-1]] = value_of[chain[0]]
  else:
    value_of[chain[-1]] = str(rng.choice([v for v in values if v != value_of[chain[0]]]))
  facts = [f"{b} is {a}'s {r}." for a, b, r in zip(chain, chain[1:], relations)]
  facts.append(f"{people[hops + 1]} is {chain[0]}'s {other_relation}.")
  facts += [fact_template.format(p=p, v=value_of[p]) for p in people]
  facts = [facts[i] for i in rng.permutation(len(facts))]
  subject = chain[0] + "".join(f"'s {r}" for r in relations)
  query = question_template.format(q=subject)
  steps = [f"{a}'s {r} is {b}." for a, b, r in zip(chain, chain[1:], relations)]
  steps.append(fact_template.format(p=chain[-1], v=value_of[chain[-1]]))
  return {"question": f"Facts: {' '.join(facts)}\nQuestion: {query}", "facts": facts,
          "query": query, "answer": value_of[chain[-1]], "steps": steps,
          "thinking": " ".join(steps), "shortcut_answer": value_of[chain[0]],
          "shortcut_works": shortcut_works, "hops": hops, "attribute": attribute}


class GeneralQA(Task):
  """Synthetic free-form QA over given facts, with a measurable surface shortcut."""

  name = "general_qa"
  version = "1.0.0"
  splits = ("train", "test")
  features = {"id": "text", "question": "text", "answer": "text", "facts": "text_list",
              "query": "text", "steps": "text_list", "thinking": "text",
              "shortcut_answer": "text", "shortcut_works": "bool", "hops": "int",
              "attribute": "text"}
  Options = Options
  sizes = {"tiny": dict(num_train=256, num_test=64, num_people=4, min_hops=1, max_hops=1),
           "default": {}, "hard": dict(num_people=8, min_hops=2, max_hops=4)}

  def generate(self, split: str) -> Iterator[dict]:
    self.check_split(split)
    rng = np.random.default_rng([self.options.seed, self.splits.index(split)])
    count = self.options.num_train if split == "train" else self.options.num_test
    for index in range(count):
      yield {"id": f"{split}-{index:06d}", **sample_problem(rng, self.options)}

  def verify_answer(self, answer: str, example: dict) -> float:
    return answers.verify_text(answer, example["answer"])


def make_task(**options) -> GeneralQA:
  return GeneralQA.from_options(**options)
