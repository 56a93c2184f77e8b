"""complementary_reasoning: a consistent world, questions it answers, no leakage in built data."""

import datetime
import pathlib
import random

import pytest

from rlthink import tasks
from rlthink.tasks.complementary_reasoning import paths, relations, world as world_lib

QA_SPLITS = ("mem", "ctx", "comp", "test_iid", "test_composition", "test_zero_shot")
TRAIN_QA = ("mem", "ctx", "comp")
TEST_QA = ("test_iid", "test_composition", "test_zero_shot")
# Larger than "tiny" so the leakage checks see many paths; still builds in about a second.
SMALL = dict(size="tiny", num_people=300, num_new_people=150, num_mem=300, num_ctx=200,
             num_comp=300, num_test_iid=100, num_test_composition=60, num_test_zero_shot=40)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The task and every split, read back from the TFDS array_record files."""
  task = tasks.get("complementary_reasoning", data_dir=str(tmp_path_factory.mktemp("cr")), **SMALL)
  return task, {split: list(task.examples(split)) for split in task.splits}


@pytest.fixture(scope="module")
def world(built):
  opts = built[0].options
  w = world_lib.build_world(opts.seed, opts.num_people, opts.num_new_people)
  return w, {name: i for i, name in enumerate(w.names)}


def test_relation_groups_are_the_papers():
  parametric = {"died_on", "child", "pet", "wrote", "email", "influenced_by", "mentoring", "hobby",
                "classmate", "first_language", "roommate", "university", "birth_date", "service",
                "occupation", "known_for", "died_in", "phone", "boss", "favorite_food"}
  contextual = {"leader_of", "influence", "birth_place", "best_friend", "address", "spouse",
                "boss_of", "colleague", "awards", "lived_in", "sibling", "mentored_by", "neighbor",
                "worked_at", "philanthropy", "rival", "parent", "nationality", "major"}
  assert set(relations.PARAMETRIC) == parametric and set(relations.CONTEXTUAL) == contextual
  assert len(relations.RELATIONS) == 39
  assert all(len(set(r.templates)) == 3 for r in relations.RELATIONS.values())
  kinds = paths.split_relations(0, (0.2, 0.7, 0.1))
  counts = {k: sum(v == k for v in kinds.values()) for k in paths.KINDS}
  assert counts == {"iid": 8, "composition": 27, "zero_shot": 4}


def test_world_relations_are_consistent():
  w = world_lib.build_world(3, 301, 151)  # odd populations: one person lacks each partner
  assert len(set(w.names)) == w.num_people
  for r in relations.SYMMETRIC:
    partner = w.facts[r]
    for a, b in enumerate(partner):
      assert b != a and (b == -1 or partner[b] == a), r
    assert sum(b == -1 for b in partner) <= 2
  for r, inverse in relations.INVERSE.items():
    for a, b in enumerate(w.facts[r]):
      assert b != a and w.facts[inverse][b] == a, r
  for r in relations.PERSON_RELATIONS:
    if r in relations.PARAMETRIC:  # parametric chains stay in their population
      for a, b in enumerate(w.facts[r]):
        assert b == -1 or w.is_parametric(a) == w.is_parametric(b), r
  parse = lambda text: datetime.datetime.strptime(text, "%B %d, %Y")
  for person in range(w.num_people):
    assert parse(w.facts["birth_date"][person]) < parse(w.facts["died_on"][person])
    assert w.facts["address"][person].endswith(", " + w.facts["lived_in"][person])
    assert w.facts["child"][w.facts["child"][person]] != person


def _template_sentences(w, relation, subject):
  return [world_lib.sentence(w, relation, subject, t) for t in range(3)]


def test_questions_are_answered_by_the_world(built, world):
  task, data = built
  w, index = world
  biographies = {ex["start"]: ex["answer"] for ex in data["biographies"]}
  assert len(biographies) == task.options.num_people
  for split in QA_SPLITS:
    assert data[split], split
    for ex in data[split]:
      path, start = ex["relations"], index[ex["start"]]
      entities = paths.walk(w, start, path)
      assert [paths.entity_text(w, e) for e in entities] == ex["entities"]
      assert ex["answer"] == ex["entities"][-1] and 2 <= ex["hops"] == len(path) <= 5
      assert all(relations.RELATIONS[r].to_person for r in path[:-1])
      assert ex["question"].endswith("Question: " + paths.question(w, start, path))
      assert task.reference(ex).endswith(f"</think>So, the answer is: {ex['answer']}")
      assert task.verify(task.reference(ex), ex) == 1.0
      groups = set(ex["groups"])
      expected = {"mem": {"parametric"}, "ctx": {"contextual"}}.get(split,
                                                                    {"parametric", "contextual"})
      assert groups == expected, (split, path)
      for subject, relation in zip(entities, path):
        if relation in relations.CONTEXTUAL:  # the fact is in the prompt's biographies
          assert any(s in ex["question"] for s in _template_sentences(w, relation, subject))
          assert w.names[subject] in ex["context_people"]
        else:  # the fact is in the subject's trained biography
          assert any(s in biographies[w.names[subject]]
                     for s in _template_sentences(w, relation, subject))
      if split == "mem":
        assert ex["question"].startswith("Question: ")


def test_no_leakage_in_built_data(built):
  task, data = built
  kinds = paths.split_relations(task.options.seed, task.options.relation_fractions)
  zero_shot = {r for r, k in kinds.items() if k == "zero_shot"}
  train = [ex for split in TRAIN_QA for ex in data[split]]
  train_paths = {tuple(ex["relations"]) for ex in train}
  train_relations = {r for ex in train for r in ex["relations"]}
  assert not train_relations & zero_shot
  zero_phrases = {relations.RELATIONS[r].noun_phrase("X") for r in zero_shot}
  for ex in train:  # also in the text: no zero-shot relation phrase in a training question
    assert not set(_phrases(ex["question"].rsplit("Question: ", 1)[1])) & zero_phrases
  composition = {tuple(ex["relations"]) for ex in data["test_composition"]}
  assert composition and not composition & train_paths
  assert all(set(p) <= train_relations for p in composition)
  comp_paths = {tuple(ex["relations"]) for ex in data["comp"]}
  assert all(tuple(ex["relations"]) in comp_paths for ex in data["test_iid"])
  assert all(set(ex["relations"]) & zero_shot for ex in data["test_zero_shot"])
  train_starts = {ex["start"] for ex in train}
  test_starts = {ex["start"] for split in TEST_QA for ex in data[split]}
  assert not train_starts & test_starts
  for ex in [e for s in TEST_QA for e in data[s]]:
    assert ex["category"] == ex["id"].split("-")[0][len("test_"):]
  # Contextual questions start from new people and parametric people alike.
  parametric = {ex["start"] for ex in data["biographies"]}
  starts_new = [ex["start"] not in parametric for ex in data["ctx"]]
  assert 0.3 < sum(starts_new) / len(starts_new) < 0.7

def _phrases(question_line):
  """Every noun phrase "the <relation> of X" nested in a question, outermost first, with X
  replaced by "X" (an independent parse of the question text)."""
  body = question_line.split(" is ", 1)[1].rstrip("?")
  out = []
  while True:
    for relation in relations.RELATIONS.values():
      head, _, tail = relation.phrase.partition("{}")
      if body.startswith(head) and body.endswith(tail) and len(body) > len(head) + len(tail):
        out.append(relation.noun_phrase("X"))
        body = body[len(head):len(body) - len(tail)]
        break
    else:
      return out


def test_question_text_parses_back_to_the_path(built):
  _, data = built
  for split in QA_SPLITS:
    for ex in data[split]:
      line = ex["question"].rsplit("Question: ", 1)[1]
      expected = [relations.RELATIONS[r].noun_phrase("X") for r in reversed(ex["relations"])]
      assert _phrases(line) == expected


def test_verifier_on_adversarial_completions(built):
  task, data = built
  ex = data["test_composition"][0]
  answer, other = ex["answer"], data["test_composition"][1]["answer"]
  assert answer != other
  think = "<think>" + ex["thinking"]
  cases = {
      f"{think}</think>So, the answer is: {answer}": 1.0,
      f"{think}</think>{answer.upper()}": 1.0,
      f"{think}</think>The answer is {answer}.": 1.0,
      f"{think}</think>So, the answer is: {other}. So, the answer is: {answer}": 1.0,
      f"{think}So, the answer is: {answer}</think>": 0.0,  # only inside thinking
      f"{think}So, the answer is: {answer}</think>So, the answer is: {other}": 0.0,
      f"{think}</think>So, the answer is: {answer} or {other}": 0.0,
      f"{think}</think>So, the answer is: {answer}\n{other}": 0.0,
      f"{think} So, the answer is: {answer}": 0.0,  # unterminated thinking
      f"{think}</think><think>So, the answer is: {answer}": 0.0,  # re-opened, unterminated
      "": 0.0,
      "<think>" + "x" * 100_000 + "</think>" + "y" * 100_000: 0.0,
      f"{think}</think>So, the answer is: {answer.replace('o', 'о').replace('a', 'а')}": 0.0,
      task.prompt(ex): 0.0,
      ex["question"] + f"\nSo, the answer is: {answer}": 0.0,  # no thinking span at all
  }
  for completion, expected in cases.items():
    assert task.verify(completion, ex) == expected, completion[:200]
  assert any(c in answer for c in "oa")  # the look-alike case really changed the answer
  rng = random.Random(0)
  pieces = ["<think>", "</think>", "So, the answer is:", answer, other, "\n", "é", "\u200b", "Ａ"]
  for _ in range(300):  # random mixtures of markers and answers never raise
    text = "".join(rng.choice(pieces) for _ in range(rng.randrange(8)))
    assert task.verify(text, ex) in (0.0, 1.0)


def _array_record_bytes(root: pathlib.Path) -> dict:
  return {p.relative_to(root).as_posix(): p.read_bytes()
          for p in sorted(root.rglob("*")) if "array_record" in p.name}


def test_built_files_are_deterministic_in_the_seed(tmp_path):
  files = {}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    task = tasks.get("complementary_reasoning", size="tiny", seed=seed,
                     data_dir=str(tmp_path / name))
    task.examples("comp")
    files[name] = _array_record_bytes(tmp_path / name)
  assert len(files["a"]) >= len(tasks.get("complementary_reasoning", size="tiny").splits)
  assert files["a"] == files["b"]
  assert list(files["c"].values()) != list(files["a"].values())


@pytest.mark.parametrize("options, message", [
    (dict(num_people=90000), "num_people=90000"),
    (dict(hops=(1, 2)), "hops=(1, 2)"),
    (dict(hops=(2, 6), hop_weights=(0.5, 0.5)), "hops=(2, 6)"),
    (dict(hop_weights=(1.0,)), "hop_weights"),
    (dict(relation_fractions=(0.5, 0.5, 0.5)), "relation_fractions"),
    (dict(word_lists={"first_names": "/no/such/names.txt"}), "/no/such/names.txt"),
    (dict(word_lists={"planets": __file__}), "unknown word list 'planets'"),
    (dict(size="huge"), "size='huge'"),
    (dict(num_peeple=3), "num_peeple"),
    (dict(num_ctx=0), "num_ctx=0"),
])
def test_bad_options_raise_one_clear_error(options, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    tasks.get("complementary_reasoning", **options)


def test_unknown_split_and_impossible_sizes(tmp_path):
  task = tasks.get("complementary_reasoning", size="tiny", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown split 'validation'"):
    task.examples("validation")
  # Five hops need five distinct people on the way; four people cannot make one such path.
  crowded = tasks.get("complementary_reasoning", size="tiny", num_people=4, num_new_people=0,
                      new_people_fraction=0.0, hops=(5,), hop_weights=(1.0,))
  with pytest.raises(ValueError, match="split 'mem'"):
    list(crowded.generate("mem"))
  with pytest.raises(ValueError, match="num_people=2 leaves no test subjects"):
    list(tasks.get("complementary_reasoning", size="tiny", num_people=2).generate("mem"))


def test_word_list_override_is_used(tmp_path):
  first = tmp_path / "first.txt"
  first.write_text("Zorro\nQuill\nMaple\n")
  task = tasks.get("complementary_reasoning", size="tiny", num_people=20, num_new_people=10,
                   word_lists={"first_names": str(first)})
  names = [ex["start"] for ex in task.generate("biographies")]
  assert {n.split()[0] for n in names} <= {"Zorro", "Quill", "Maple"}


def test_thinking_markers_follow_the_prompt_format(built):
  task, data = built
  custom = tasks.get("complementary_reasoning", **SMALL,
                     prompt_format={"think_open": "<reasoning>", "think_close": "</reasoning>"})
  ex = data["comp"][0]
  reference = custom.reference(ex)
  assert reference.startswith("<reasoning>") and custom.verify(reference, ex) == 1.0
  assert custom.verify(task.reference(ex), ex) == 0.0  # "<think>" is no boundary any more


def test_the_small_world_draws_every_split_with_reworded_biographies():
  """size='small' (the GPU-scale experiment's world) generates at its sizes: 1k parametric
  people with six differently worded biographies each, and every question split."""
  task = tasks.get("complementary_reasoning", size="small")
  data = {split: list(task.generate(split)) for split in task.splits}
  counts = {split: len(rows) for split, rows in data.items()}
  assert counts == {"biographies": 6000, "mem": 2000, "ctx": 1000, "comp": 1000,
                    "test_iid": 500, "test_composition": 300, "test_zero_shot": 200}
  variants = [ex["answer"] for ex in data["biographies"] if ex["start"] == data["mem"][0]["start"]]
  assert len(variants) == 6 and len(set(variants)) == 6
  # Reworded (other templates), not only shuffled.
  assert sorted(variants[0].split(". ")) != sorted(variants[1].split(". "))
