"""Options of the latent-generalization data, and the generation of every split at once.

`knowledge_sets` disjoint knowledge sets are drawn (no nonsense word, celebrity name or description
is shared between sets). Splits:
  documents              training documents of every knowledge set (SFT writes facts in weights)
  rl_train               questions about knowledge set 0 (a random `rl_fraction` of its items)
  warm_start             rl_train's questions with their trace as the reference thinking (the
                         warm start on thinking traces before RL)
  test_<kind>            the other questions about knowledge set 0 (in-distribution)
  transfer_<kind>        questions about knowledge sets 1.. (never in rl_train: transfer)
with <kind> in rephrasing, reversal, syllogism, category_holdout (see `common.KINDS`). Every
question example has both answer forms' data; `answer_format` picks the one in the prompt, and
`in_context` puts the relevant facts (and distractor facts) in the prompt: the in-context upper
bound. Reversal-curse: forward-only celebrities are never stated description-first in documents;
rl_train may ask some of set 0's celebrities backwards, and those are never in a test split.
Every question example carries "trace" (its teacher trace, `traces.py`); only warm_start examples
have it as "thinking" (the SFT target's thinking span; empty elsewhere).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Mapping

from rlthink.tasks import resources
from rlthink.tasks.latent_generalization import (celebrities, hierarchy, reversals, syllogisms,
                                                 traces)
from rlthink.tasks.latent_generalization.common import KINDS, Item

SOURCES = ("simple_reversal", "syllogism", "reversal_curse", "semantic")
ANSWER_FORMATS = ("free", "multiple_choice")
SPLITS = (("documents", "rl_train", "warm_start") + tuple(f"test_{k}" for k in KINDS)
          + tuple(f"transfer_{k}" for k in KINDS))
WORD_LISTS = ("first_names", "last_names", "celebrity_roles", "title_adjectives", "title_nouns")
_FILLER_WORDS = 40


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options.

  knowledge_sets: disjoint knowledge sets (RL on set 0, transfer tests on the others).
  sources: which of SOURCES to include. answer_format: "free" or "multiple_choice".
  in_context: show the relevant facts in every question prompt. num_choices: options of
  celebrity and semantic multiple-choice questions (1 correct + num_choices - 1 distractors).
  num_comparison_facts / passages_per_fact: simple reversals and passages per fact (also per
  syllogism premise and per celebrity). num_syllogisms, num_celebrities (per set, half
  forward-only),
  num_categories / max_properties / num_holdout_categories / num_documents: the semantic structure.
  rl_fraction: share of knowledge set 0's questions in rl_train. word_lists: {list: path} overrides.
  """

  seed: int = 0
  size: str = "default"
  knowledge_sets: int = 2
  sources: tuple[str, ...] = SOURCES
  answer_format: str = "free"
  in_context: bool = False
  num_choices: int = 4
  num_comparison_facts: int = 100
  passages_per_fact: int = 10
  num_syllogisms: int = 69
  num_celebrities: int = 60
  num_categories: int = 110
  max_properties: int = 6
  num_holdout_categories: int = 11
  num_documents: int = 2200
  rl_fraction: float = 0.5
  word_lists: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "sources", tuple(self.sources))
    lists = self.word_lists
    lists = lists.items() if isinstance(lists, Mapping) else lists
    object.__setattr__(self, "word_lists", tuple(sorted((str(k), str(v)) for k, v in lists)))
    checks = [
        ("knowledge_sets", self.knowledge_sets >= 2,
         ">= 2 (set 0 for RL, the others for transfer)"),
        ("sources", bool(self.sources) and set(self.sources) <= set(SOURCES)
         and len(set(self.sources)) == len(self.sources), f"distinct names from {SOURCES}"),
        ("answer_format", self.answer_format in ANSWER_FORMATS, f"one of {ANSWER_FORMATS}"),
        ("num_choices", 2 <= self.num_choices <= 26, "in 2..26"),
        ("num_comparison_facts", self.num_comparison_facts >= 1, ">= 1"),
        ("passages_per_fact", self.passages_per_fact >= 2 or "reversal_curse" not in self.sources,
         ">= 2 (both-orders celebrities need a passage in each order)"),
        ("passages_per_fact", self.passages_per_fact >= 1, ">= 1"),
        ("num_syllogisms", self.num_syllogisms >= 1, ">= 1"),
        ("num_celebrities", self.num_celebrities >= max(2, self.num_choices), ">= num_choices"),
        ("num_categories", self.num_categories >= 2 * self.num_choices + 2,
         ">= 2 * num_choices + 2"),
        ("max_properties", 1 <= self.max_properties <= len(hierarchy.RELATIONS),
         f"in 1..{len(hierarchy.RELATIONS)}"),
        ("num_holdout_categories", 0 <= self.num_holdout_categories < self.num_categories,
         ">= 0 and < num_categories"),
        ("num_documents", self.num_documents >= self.num_categories, ">= num_categories"),
        ("rl_fraction", 0 < self.rl_fraction < 1, "in (0, 1)"),
    ]
    for name, ok, expected in checks:
      if not ok:
        raise ValueError(f"latent_generalization: invalid option {name}={getattr(self, name)!r}; "
                         f"expected {expected}")
    resources.check_overrides(dict(self.word_lists), WORD_LISTS, "word_lists")
    first, last, roles, adjectives, nouns = (
        len(resources.load_words(n, dict(self.word_lists))) for n in WORD_LISTS)
    capacity = min(first * last, roles * adjectives * nouns)
    if self.num_celebrities * self.knowledge_sets > capacity:
      raise ValueError(
          f"latent_generalization: invalid option num_celebrities={self.num_celebrities}: "
          f"x knowledge_sets={self.knowledge_sets} exceeds the {capacity} distinct celebrity "
          "names / descriptions the word lists make")


def _knowledge_set(opts: Options, index: int, words, names: list[str],
                   descs: list[str]) -> tuple[list[str], list[Item]]:
  """(documents, items) of knowledge set `index`."""
  filler = words.draw(_FILLER_WORDS)
  entity_words = words.draw(2 * opts.num_comparison_facts)
  terms = words.draw(3 * opts.num_syllogisms)
  semantic_words = words.draw(opts.num_categories * (1 + opts.max_properties))
  docs, items = [], []
  rng = lambda source: resources.rng_for(opts.seed, "knowledge_set", index, source)
  if "simple_reversal" in opts.sources:
    d, i = reversals.generate(rng("simple_reversal"), entity_words, filler,
                              opts.num_comparison_facts, opts.passages_per_fact)
    docs, items = docs + d, items + i
  if "syllogism" in opts.sources:
    d, i = syllogisms.generate(rng("syllogism"), terms, filler, opts.num_syllogisms,
                               opts.passages_per_fact)
    docs, items = docs + d, items + i
  if "reversal_curse" in opts.sources:
    d, i = celebrities.generate(rng("reversal_curse"), names, descs, filler,
                                opts.passages_per_fact, opts.num_choices)
    docs, items = docs + d, items + i
  if "semantic" in opts.sources:
    h = hierarchy.build(rng("semantic"), semantic_words, opts.num_categories,
                        opts.max_properties, opts.num_holdout_categories)
    docs += hierarchy.documents(rng("semantic_documents"), h, opts.num_documents)
    items += hierarchy.items(rng("semantic_items"), h, opts.num_choices)
  return docs, items


def _example(opts: Options, item: Item, split: str, index: int, knowledge_set: int, rng) -> dict:
  order = list(range(len(item.options)))
  rng.shuffle(order)
  options = [item.options[i] for i in order]
  answer_index = order.index(0)
  multiple_choice = opts.answer_format == "multiple_choice"
  if multiple_choice:
    lines = [f"{string.ascii_uppercase[i]}. {option}" for i, option in enumerate(options)]
    question = "\n".join([item.stem] + lines + ["Answer with the letter of the correct option."])
    answer = string.ascii_uppercase[answer_index]
  else:
    question, answer = item.question, item.accepted[0]
  if opts.in_context:
    question = "Facts:\n" + "\n".join(item.facts) + "\n\n" + question
  trace = traces.compose(item.recall, [item.checks[i] for i in order] if item.checks else [],
                         options, multiple_choice, answer_index,
                         item.options[0] if item.checks else item.accepted[0])
  return {"id": f"{split}-{index:06d}", "question": question, "answer": answer,
          "accepted": list(item.accepted), "options": options, "answer_index": answer_index,
          "answer_format": opts.answer_format, "source": item.source, "kind": item.kind,
          "key": item.key, "knowledge_set": knowledge_set, "entities": list(item.entities),
          "trace": trace, "thinking": trace if split == "warm_start" else ""}


def generate_all(opts: Options) -> dict[str, list[dict]]:
  """Every split's examples, deterministic given `opts`."""
  lists = dict(opts.word_lists)
  first, last = (resources.load_words(n, lists) for n in ("first_names", "last_names"))
  total = opts.num_celebrities * opts.knowledge_sets  # Options checked the lists hold enough
  rng = resources.rng_for(opts.seed, "celebrities")
  codes = rng.sample(range(len(first) * len(last)), total)
  all_names = [f"{first[c // len(last)]} {last[c % len(last)]}" for c in codes]
  all_descs = celebrities.descriptions(
      rng, total, *(resources.load_words(n, lists) for n in WORD_LISTS[2:]), taken=set())
  words = resources.NonsenseWords(resources.rng_for(opts.seed, "nonsense_words"),
                                  reserved=all_names + all_descs)

  data = {split: [] for split in SPLITS}
  documents = []
  for s in range(opts.knowledge_sets):
    chunk = slice(s * opts.num_celebrities, (s + 1) * opts.num_celebrities)
    docs, items = _knowledge_set(opts, s, words, all_names[chunk], all_descs[chunk])
    documents += [(s, d) for d in docs]
    if s > 0:
      for item in items:
        data[f"transfer_{item.kind}"].append((s, item))
      continue
    # Set 0: per (source, kind), a shuffled rl_fraction goes to rl_train, the rest (at least one)
    # to test_<kind>.
    split_rng = resources.rng_for(opts.seed, "rl_split")
    groups = {}
    for item in items:
      groups.setdefault((item.source, item.kind), []).append(item)
    for (_, kind), group in groups.items():
      split_rng.shuffle(group)
      n_rl = min(int(opts.rl_fraction * len(group) + 0.5), len(group) - 1)
      data["rl_train"] += [(0, item) for item in group[:n_rl]]
      data[f"test_{kind}"] += [(0, item) for item in group[n_rl:]]
  data["warm_start"] = list(data["rl_train"])
  empty = [split for split in SPLITS[1:] if not data[split]]
  if empty:
    raise ValueError(
        f"latent_generalization: splits {empty} would be empty with sources={opts.sources}, "
        f"num_holdout_categories={opts.num_holdout_categories}, rl_fraction={opts.rl_fraction}; "
        "TFDS cannot write empty splits: include 'semantic' in sources (the only source of "
        "category holdouts) with num_holdout_categories >= 1, and enough items per kind")
  out = {"documents": [
      {"id": f"documents-{i:06d}", "question": "", "answer": text, "accepted": [text],
       "options": [], "answer_index": -1, "answer_format": "document", "source": "document",
       "kind": "document", "key": "", "knowledge_set": s, "entities": [], "trace": "",
       "thinking": ""}
      for i, (s, text) in enumerate(documents)]}
  for split in SPLITS[1:]:
    rng = resources.rng_for(opts.seed, "examples", split)
    out[split] = [_example(opts, item, split, i, s, rng) for i, (s, item) in enumerate(data[split])]
  return out
