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

Splits: "train" (the shortcut works at `shortcut_rate`), "test" (at `test_shortcut_rate`, default
`shortcut_rate`) and "test_no_shortcut" (the shortcut never works: accuracy there needs the
relations followed).

The SFT data can hold the shortcut behaviour itself (`demonstration`): each train example's
"sft_style" is "reference" (the chain, then the answer), "shortcut" (thinking that states the
named person's value, "Ava lives in Oslo.", then that value), "empty" (no thinking, then the
named person's value) or "bypass" (the reference chain, then the named person's value: the
answer ignores the thinking), drawn at `sft_shortcut_fraction` / `sft_empty_fraction` /
`sft_bypass_fraction`. A non-reference demonstration is right exactly when "shortcut_works". The
reference ("thinking", "answer", `reference`) and the reward stay the true chain and answer;
test splits are all "reference".
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from rlthink.tasks import answers
from rlthink.tasks.base import Task

SFT_STYLES = ("reference", "shortcut", "empty", "bypass")
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
  """Data options; each example has `num_people` people (>= max_hops + 2).

  shortcut_rate: how often the shortcut works in "train"; test_shortcut_rate: in "test" (None:
  shortcut_rate); "test_no_shortcut" has it never work. num_test: examples of each test split.
  sft_shortcut_fraction / sft_empty_fraction / sft_bypass_fraction: the shares of train
  examples whose SFT demonstration answers by the shortcut after the shortcut's fact / no
  thinking / the reference chain (the rest: the reference chain and answer).
  """

  seed: int = 0
  size: str = "default"
  num_train: int = 10000
  num_test: int = 1000
  shortcut_rate: float = 0.7
  test_shortcut_rate: float | None = None
  num_people: int = 5
  min_hops: int = 1
  max_hops: int = 2
  sft_shortcut_fraction: float = 0.0
  sft_empty_fraction: float = 0.0
  sft_bypass_fraction: float = 0.0

  def __post_init__(self):
    rate = lambda v: v is not None and 0.0 <= v <= 1.0
    checks = [("num_train", self.num_train >= 0), ("num_test", self.num_test >= 0),
              ("shortcut_rate", rate(self.shortcut_rate)),
              ("test_shortcut_rate", self.test_shortcut_rate is None
               or rate(self.test_shortcut_rate)),
              ("min_hops", 1 <= self.min_hops <= self.max_hops),
              ("num_people", self.max_hops + 2 <= self.num_people <= len(_PEOPLE)),
              ("sft_shortcut_fraction", rate(self.sft_shortcut_fraction)),
              ("sft_empty_fraction", rate(self.sft_empty_fraction)),
              ("sft_bypass_fraction", rate(self.sft_bypass_fraction)
               and self.sft_shortcut_fraction + self.sft_empty_fraction
               + self.sft_bypass_fraction <= 1.0)]
    for name, ok in checks:
      if not ok:
        raise ValueError(f"general_qa: invalid option {name}={getattr(self, name)!r} in {self} "
                         f"(need num_* >= 0, rates and fractions in [0, 1], "
                         f"the sft_*_fraction options sum to <= 1, "
                         f"1 <= min_hops <= max_hops, max_hops + 2 <= num_people <= "
                         f"{len(_PEOPLE)})")

  def rate_of(self, split: str) -> float:
    """How often the shortcut works in `split`."""
    if split == "train":
      return self.shortcut_rate
    if split == "test":
      return self.shortcut_rate if self.test_shortcut_rate is None else self.test_shortcut_rate
    return 0.0


def sample_problem(rng: np.random.Generator, opts: Options, shortcut_rate: float | None = None,
                   style: str = "reference") -> dict:
  """One example (all fields but "id"); the shortcut works with probability `shortcut_rate`
  (default: `opts.shortcut_rate`); `style` is its "sft_style" (see `demonstration`)."""
  shortcut_rate = opts.shortcut_rate if shortcut_rate is None else shortcut_rate
  people = [str(p) for p in rng.choice(_PEOPLE, size=opts.num_people, replace=False)]
  attribute = list(_ATTRIBUTES)[rng.integers(len(_ATTRIBUTES))]
  fact_template, question_template, values = _ATTRIBUTES[attribute]
  hops = int(rng.integers(opts.min_hops, opts.max_hops + 1))
  chain = people[:hops + 1]  # chain[0] is named in the question, chain[-1] holds the answer
  relations = [str(r) for r in rng.choice(_RELATIONS, size=hops)]
  # A distractor relation from the named person, to someone off the chain.
  other_relation = str(rng.choice([r for r in _RELATIONS if r != relations[0]]))
  value_of = {p: str(values[rng.integers(len(values))]) for p in people}
  shortcut_works = bool(rng.random() < shortcut_rate)
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
          "shortcut_thinking": fact_template.format(p=chain[0], v=value_of[chain[0]]),
          "shortcut_works": shortcut_works, "hops": hops, "attribute": attribute,
          "sft_style": style}


def draw_styles(rng: np.random.Generator, count: int, opts: Options) -> list[str]:
  """The "sft_style" of `count` train examples: shortcut, empty and bypass at their fractions."""
  shortcut, empty = opts.sft_shortcut_fraction, opts.sft_empty_fraction
  shares = [1.0 - shortcut - empty - opts.sft_bypass_fraction, shortcut, empty]
  draws = rng.random(count)
  edges = np.cumsum(shares)
  return [SFT_STYLES[int(np.searchsorted(edges, u, side="right"))] for u in draws]


class GeneralQA(Task):
  """Synthetic free-form QA over given facts, with a measurable surface shortcut."""

  name = "general_qa"
  version = "1.1.0"
  splits = ("train", "test", "test_no_shortcut")
  features = {"id": "text", "question": "text", "answer": "text", "facts": "text_list",
              "query": "text", "steps": "text_list", "thinking": "text",
              "shortcut_answer": "text", "shortcut_thinking": "text",
              "shortcut_works": "bool", "hops": "int", "attribute": "text", "sft_style": "text"}
  Options = Options
  sizes = {"tiny": dict(num_train=256, num_test=64, num_people=4, min_hops=1, max_hops=1),
           "default": {}, "hard": dict(num_people=8, min_hops=2, max_hops=4)}

  def generate(self, split: str) -> Iterator[dict]:
    self.check_split(split)
    opts = self.options
    index_of_split = self.splits.index(split)
    rng = np.random.default_rng([opts.seed, index_of_split])
    count = opts.num_train if split == "train" else opts.num_test
    # Styles come from their own stream: the questions do not depend on the SFT mixture.
    styles = (draw_styles(np.random.default_rng([opts.seed, index_of_split, 1]), count, opts)
              if split == "train" else ["reference"] * count)
    for index in range(count):
      yield {"id": f"{split}-{index:06d}",
             **sample_problem(rng, opts, opts.rate_of(split), styles[index])}

  def demonstration(self, example: dict) -> tuple[str, str]:
    """The (thinking, answer) SFT imitates: the reference chain and answer, or the shortcut's
    answer after its fact, no thinking or the reference chain, as the example's "sft_style"
    says."""
    style = example.get("sft_style") or "reference"
    if style == "reference":
      return self.thinking(example), self.answer(example)
    if style not in SFT_STYLES:
      raise ValueError(f"general_qa: example {example.get('id')!r} has sft_style {style!r}; "
                       f"expected one of {SFT_STYLES}")
    thinking = {"shortcut": example["shortcut_thinking"], "empty": "",
                "bypass": self.thinking(example)}[style]
    return thinking, str(example["shortcut_answer"])

  def verify_answer(self, answer: str, example: dict) -> float:
    return answers.verify_text(answer, example["answer"])


def make_task(**options) -> GeneralQA:
  return GeneralQA.from_options(**options)
