"""Options of the complementary-reasoning data, and the generation of every split at once.

Training splits: "biographies" (parametric biographies of the parametric population: the Mem
documents), "mem" (questions along parametric-only paths, no context), "ctx" (contextual-only paths,
the contextual biography of every person asked about in the prompt), "comp" (paths mixing both
groups; the prompt holds the contextual biography of each person a contextual relation is asked
from). SFT(Mem) = biographies + mem. Test splits (complementary paths, held-out start people):
"test_iid" (training comp paths), "test_composition" (unseen combinations of seen relations),
"test_zero_shot" (paths with a relation never asked in training); default sizes 1500/900/600
(the paper's 5:3:2 mix).
Start people are split once into training and test subjects, so no test question starts from a
person any training question starts from. Ctx and comp questions start from a new person with
probability `new_people_fraction` (the paper's "half new people, half from the parametric set").
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from rlthink.tasks import resources
from rlthink.tasks.complementary_reasoning import paths, world as world_lib
from rlthink.tasks.complementary_reasoning.relations import (
    CONTEXTUAL, NAMES, PARAMETRIC, RELATIONS, VALUE_LISTS)

SPLITS = ("biographies", "mem", "ctx", "comp", "test_iid", "test_composition", "test_zero_shot")
_TRIES = 2000  # random walks tried per example before giving up with an error


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options (see the module docstring for what each split holds).

  num_people: the parametric population (10k in the paper); num_new_people: people seen only in
  contextual biographies. num_mem / num_ctx / num_comp: training questions per set. num_test_*:
  test questions. hops / hop_weights: path lengths (2-5) and their probabilities.
  relation_fractions: (iid, composition, zero_shot) shares of the relations.
  test_subject_fraction: share of people whose questions are test-only. biography_variants:
  differently worded/shuffled biographies per person. context_distractors: extra unrelated
  contextual biographies per ctx/comp prompt. word_lists: {list name: local .txt path} overrides.
  """

  seed: int = 0
  size: str = "default"
  num_people: int = 10000
  num_new_people: int = 5000
  num_mem: int = 20000
  num_ctx: int = 10000
  num_comp: int = 10000
  num_test_iid: int = 1500
  num_test_composition: int = 900
  num_test_zero_shot: int = 600
  hops: tuple[int, ...] = (2, 3, 4, 5)
  hop_weights: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)
  relation_fractions: tuple[float, float, float] = (0.2, 0.7, 0.1)
  new_people_fraction: float = 0.5
  test_subject_fraction: float = 0.2
  biography_variants: int = 1
  context_distractors: int = 0
  word_lists: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    for name in ("hops", "hop_weights", "relation_fractions"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    lists = self.word_lists
    lists = lists.items() if isinstance(lists, Mapping) else lists
    object.__setattr__(self, "word_lists", tuple(sorted((str(k), str(v)) for k, v in lists)))
    splits = ("num_mem", "num_ctx", "num_comp", "num_test_iid", "num_test_composition",
              "num_test_zero_shot")
    checks = [(name, getattr(self, name) >= 1, ">= 1 (TFDS writes no empty split)")
              for name in splits] + [
        ("num_people", self.num_people >= 2, ">= 2"),
        ("num_new_people", self.num_new_people >= 0, ">= 0"),
        ("context_distractors", self.context_distractors >= 0, ">= 0"),
        ("hops", bool(self.hops) and all(2 <= h <= 5 for h in self.hops)
         and len(set(self.hops)) == len(self.hops), "distinct hop counts in 2..5"),
        ("hop_weights", len(self.hop_weights) == len(self.hops)
         and all(w > 0 for w in self.hop_weights), "one positive weight per hop count"),
        ("relation_fractions", len(self.relation_fractions) == 3
         and all(f >= 0 for f in self.relation_fractions)
         and abs(sum(self.relation_fractions) - 1) < 1e-6,
         "(iid, composition, zero_shot) summing to 1"),
        ("new_people_fraction", 0 <= self.new_people_fraction <= 1
         and (self.num_new_people > 0 or self.new_people_fraction == 0),
         "in [0, 1], and 0 when num_new_people is 0"),
        ("test_subject_fraction", 0 < self.test_subject_fraction < 1, "in (0, 1)"),
        ("biography_variants", self.biography_variants >= 1, ">= 1"),
    ]
    for name, ok, expected in checks:
      if not ok:
        raise ValueError(f"complementary_reasoning: invalid option {name}={getattr(self, name)!r}; "
                         f"expected {expected}")
    resources.check_overrides(dict(self.word_lists), world_lib.NAME_LISTS + VALUE_LISTS,
                              "word_lists")
    first, last = (resources.load_words(n, dict(self.word_lists)) for n in world_lib.NAME_LISTS)
    if self.num_people + self.num_new_people > len(first) * len(last):
      raise ValueError(
          f"complementary_reasoning: invalid option num_people={self.num_people} (with "
          f"num_new_people={self.num_new_people}): more people than the {len(first) * len(last)} "
          f"unique names of first_names x last_names")


def _subject_pools(opts: Options) -> dict[str, dict[str, list[int]]]:
  """{"train"|"test": {"parametric"|"new": start people}}."""
  pools = {"train": {}, "test": {}}
  ranges = {"parametric": range(opts.num_people),
            "new": range(opts.num_people, opts.num_people + opts.num_new_people)}
  for population, members in ranges.items():
    members = list(members)
    resources.rng_for(opts.seed, "subjects", population).shuffle(members)
    n_test = int(round(opts.test_subject_fraction * len(members)))
    pools["test"][population], pools["train"][population] = members[:n_test], members[n_test:]
  for side in ("train", "test"):
    if not pools[side]["parametric"]:
      raise ValueError(f"complementary_reasoning: num_people={opts.num_people} leaves no {side} "
                       f"subjects with test_subject_fraction={opts.test_subject_fraction}")
  return pools


class _Generator:
  """Draws the questions of every split from one world (one instance per option set)."""

  def __init__(self, opts: Options):
    self.opts = opts
    self.world = world_lib.build_world(opts.seed, opts.num_people, opts.num_new_people,
                                       dict(opts.word_lists))
    self.kinds = paths.split_relations(opts.seed, opts.relation_fractions)
    self.pools = _subject_pools(opts)
    self.seen: set[tuple] = set()  # (start, path) of every question drawn so far
    self._context_bios: dict[int, str] = {}

  def context_biography(self, person: int) -> str:
    if person not in self._context_bios:
      rng = resources.rng_for(self.opts.seed, "context_biography", person)
      self._context_bios[person] = world_lib.biography(self.world, person, "contextual", rng)
    return self._context_bios[person]

  def _start(self, rng, side: str, mode: str) -> int:
    pool = self.pools[side]
    new = mode != "mem" and pool["new"] and rng.random() < self.opts.new_people_fraction
    members = pool["new"] if new else pool["parametric"]
    return members[rng.randrange(len(members))]

  def _accept(self, mode: str, path: list[str], seen_relations: set[str]) -> bool:
    kind = paths.path_kind(self.opts.seed, self.kinds, path)
    if mode in ("mem", "ctx"):
      return kind != "zero_shot"
    if paths.groups(path) != {"parametric", "contextual"}:
      return False
    if mode == "comp":
      return kind in ("iid", "composition_train")
    if mode == "test_composition":
      return kind == "composition_test" and set(path) <= seen_relations
    return kind == "zero_shot"  # test_zero_shot

  def example(self, split: str, index: int, start: int, path: list[str], rng) -> dict:
    world, entities = self.world, paths.walk(self.world, start, path)
    askers = [e for e, r in zip(entities, path) if RELATIONS[r].group == "contextual"]
    context_people = list(dict.fromkeys(askers))
    wanted = min(self.opts.context_distractors, world.num_people - len(context_people))
    while context_people and wanted:
      other = rng.randrange(world.num_people)
      if other not in context_people:
        context_people.append(other)
        wanted -= 1
    shown = list(context_people)
    rng.shuffle(shown)
    question = paths.question(world, start, path)
    context = "\n\n".join(self.context_biography(p) for p in shown)
    steps = paths.steps(world, entities, path)
    answer = paths.entity_text(world, entities[-1])
    category = {"mem": "mem", "ctx": "ctx", "comp": "comp"}.get(split, split[len("test_"):])
    return {
        "id": f"{split}-{index:06d}",
        "question": (f"{context}\n\nQuestion: {question}" if context else f"Question: {question}"),
        "answer": answer, "thinking": "\n".join(steps), "steps": steps,
        "relations": list(path), "groups": [RELATIONS[r].group for r in path],
        "relation_kinds": [self.kinds[r] for r in path], "hops": len(path), "category": category,
        "start": world.names[start], "entities": [paths.entity_text(world, e) for e in entities],
        "context_people": [world.names[p] for p in context_people],
    }

  def questions(self, split: str, count: int, seen_relations: set[str] = frozenset(),
                iid_paths: list[tuple[str, ...]] | None = None) -> list[dict]:
    """`count` distinct questions of `split` (see the module docstring)."""
    mode = split
    side = "test" if split.startswith("test") else "train"
    allowed = {"mem": [r for r in PARAMETRIC if self.kinds[r] != "zero_shot"],
               "ctx": [r for r in CONTEXTUAL if self.kinds[r] != "zero_shot"],
               "comp": [r for r in NAMES if self.kinds[r] != "zero_shot"]}.get(mode, NAMES)
    rng = resources.rng_for(self.opts.seed, "questions", split)
    out = []
    for index in range(count):
      for _ in range(_TRIES):
        start = self._start(rng, side, mode)
        if mode == "test_iid":
          path = list(iid_paths[rng.randrange(len(iid_paths))]) if iid_paths else None
          ok = path is not None and paths.walk(self.world, start, path) is not None
        else:
          hops = rng.choices(self.opts.hops, weights=self.opts.hop_weights)[0]
          path = paths.random_path(rng, self.world, start, hops, allowed)
          ok = path is not None and self._accept(mode, path, seen_relations)
        if ok and (start, tuple(path)) not in self.seen:
          break
      else:
        raise ValueError(
            f"complementary_reasoning: could not draw question {index} of {count} for split "
            f"{split!r} (option num_{split}); the world (num_people={self.opts.num_people}, "
            f"num_new_people={self.opts.num_new_people}) is too small or the paths too "
            f"constrained (hops={self.opts.hops}, "
            f"relation_fractions={self.opts.relation_fractions})")
      self.seen.add((start, tuple(path)))
      out.append(self.example(split, index, start, path, rng))
    return out

  def biographies(self) -> list[dict]:
    out = []
    for person in range(self.opts.num_people):
      for variant in range(self.opts.biography_variants):
        rng = resources.rng_for(self.opts.seed, "biography", person, variant)
        name = self.world.names[person]
        out.append({
            "id": f"biographies-{person:06d}-{variant}", "question": f"Tell me about {name}.",
            "answer": world_lib.biography(self.world, person, "parametric", rng), "thinking": "",
            "steps": [], "relations": [], "groups": [], "relation_kinds": [], "hops": 0,
            "category": "biography", "start": name, "entities": [name], "context_people": []})
    return out


def generate_all(opts: Options) -> dict[str, list[dict]]:
  """Every split's examples, deterministic given `opts`."""
  gen = _Generator(opts)
  data = {"biographies": gen.biographies()}
  for split in ("mem", "ctx", "comp"):
    data[split] = gen.questions(split, getattr(opts, f"num_{split}"))
  trained = [ex for split in ("mem", "ctx", "comp") for ex in data[split]]
  seen_relations = {r for ex in trained for r in ex["relations"]}
  comp_paths = [tuple(ex["relations"]) for ex in data["comp"]]
  data["test_iid"] = gen.questions("test_iid", opts.num_test_iid, iid_paths=comp_paths)
  data["test_composition"] = gen.questions("test_composition", opts.num_test_composition,
                                           seen_relations)
  data["test_zero_shot"] = gen.questions("test_zero_shot", opts.num_test_zero_shot)
  return data
