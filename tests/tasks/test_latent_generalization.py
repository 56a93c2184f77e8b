"""latent_generalization: what is trained, what is tested, and that the two never leak."""

import pathlib
import random
import re

import pytest

from rlthink import tasks
from rlthink.tasks.latent_generalization import syllogisms, traces
from rlthink.tasks.latent_generalization.common import KINDS

QUESTION_SPLITS = ["rl_train"] + [f"{side}_{k}" for side in ("test", "transfer") for k in KINDS]
TEST_SPLITS = QUESTION_SPLITS[1:]
_HEADER = re.compile(r"^(?:[A-Z]\. |Candidate: )(.*)$")
_WORD = re.compile(r"[A-Za-z']+")


def _build(tmp_path_factory, **options):
  task = tasks.get("latent_generalization", size="tiny",
                   data_dir=str(tmp_path_factory.mktemp("lg")), **options)
  return task, {split: list(task.examples(split)) for split in task.splits}


@pytest.fixture(scope="module")
def free(tmp_path_factory):
  return _build(tmp_path_factory)


@pytest.fixture(scope="module")
def choice(tmp_path_factory):
  return _build(tmp_path_factory, answer_format="multiple_choice", in_context=True, seed=5)


def _tokens(text):
  return {w.lower() for w in _WORD.findall(text)}


def test_syllogism_labels_are_classical_logic():
  # Barbara (All A B, All B C), Celarent (No B C, All A B), Darii (All B C, Some A B), with
  # non-empty terms: the textbook verdicts on all six statements about A and C.
  expected = {
      "barbara": {("all", 0, 2): "true", ("all", 2, 0): "undetermined", ("some", 0, 2): "true",
                  ("some", 2, 0): "true", ("no", 0, 2): "false", ("no", 2, 0): "false"},
      "celarent": {("all", 0, 2): "false", ("all", 2, 0): "false", ("some", 0, 2): "false",
                   ("some", 2, 0): "false", ("no", 0, 2): "true", ("no", 2, 0): "true"},
      "darii": {("all", 0, 2): "undetermined", ("all", 2, 0): "undetermined",
                ("some", 0, 2): "true", ("some", 2, 0): "true", ("no", 0, 2): "false",
                ("no", 2, 0): "false"},
  }
  for form, table in expected.items():
    for statement, label in table.items():
      assert syllogisms.entailment(syllogisms.FORMS[form], statement) == label, (form, statement)


def test_every_split_is_built_and_references_verify(free, choice):
  for task, data in (free, choice):
    for split in QUESTION_SPLITS:
      assert data[split], split
      for ex in data[split]:
        assert ex["kind"] in KINDS and task.verify(task.reference(ex), ex) == 1.0
        assert (ex["knowledge_set"] == 0) == (not split.startswith("transfer"))
        if split != "rl_train":
          assert split.endswith(ex["kind"])
    assert {ex["knowledge_set"] for ex in data["documents"]} == {0, 1}


def test_reversal_curse_forward_only_never_reversed_in_training(free):
  _, data = free
  celebs = {}
  for split in QUESTION_SPLITS:
    for ex in data[split]:
      if ex["source"] == "reversal_curse":
        celebs[ex["entities"][0]] = (ex["entities"][1], ex["key"].split(":")[0])
  both_reversed = 0
  for name, (desc, subset) in celebs.items():
    for doc in (ex["answer"] for ex in data["documents"]):
      if name in doc and desc in doc:
        if subset == "forward_only":
          assert doc.index(name) < doc.lower().index(desc.lower()), doc
        both_reversed += doc.lower().index(desc.lower()) < doc.index(name)
  assert both_reversed > 0  # set B really is trained in both orders
  tested = {ex["entities"][0] for s in TEST_SPLITS for ex in data[s]
            if ex["source"] == "reversal_curse" and ex["kind"] == "reversal"}
  assert tested and all(celebs[n][1] == "forward_only" for n in tested)
  rl_questions = [ex["question"] for ex in data["rl_train"]]
  for name in tested:
    assert not any(celebs[name][0] in q for q in rl_questions)


def test_simple_reversals_trained_in_one_direction_only(free):
  _, data = free
  for ex in (e for s in QUESTION_SPLITS for e in data[s]):
    if ex["source"] != "simple_reversal":
      continue
    a, b = ex["entities"]
    stated = [d["answer"] for d in data["documents"] if {a, b} <= _tokens(d["answer"])]
    assert stated
    for doc in stated:
      sentence = next(s for s in doc.split(".") if {a, b} <= _tokens(s)).lower()
      assert re.search(rf"\bthe {a} is \w+ than the {b}$", sentence), sentence


def test_inherited_properties_are_never_stated(free):
  _, data = free
  docs = [_tokens(d["answer"]) for d in data["documents"]]
  inherited = [ex for s in QUESTION_SPLITS for ex in data[s] if ex["source"] == "semantic"
               and ex["kind"] in ("syllogism", "category_holdout")]
  assert any(ex["kind"] == "category_holdout" for ex in inherited)
  for ex in inherited:
    category, values = ex["entities"][0], ex["entities"][1:]
    forms = {category, category + "s"}
    assert any(forms & d for d in docs)  # the category's membership is trained
    for d in docs:
      if forms & d:
        assert not {v for v in values} & d and not {v + "s" for v in values} & d


def test_held_out_knowledge_sets_never_in_rl_train(free, choice):
  for _, data in (free, choice):
    held_out = [ex for s in TEST_SPLITS if s.startswith("transfer") for ex in data[s]]
    words = {w for ex in held_out if ex["source"] != "reversal_curse" for w in ex["entities"]}
    names = {e for ex in held_out if ex["source"] == "reversal_curse" for e in ex["entities"]}
    set0 = {w for ex in data["rl_train"] if ex["source"] != "reversal_curse"
            for w in ex["entities"]}
    assert words and names and not words & set0
    for ex in data["rl_train"]:
      text = " ".join([ex["question"], ex["answer"], *ex["options"], *ex["accepted"]])
      assert not words & _tokens(text)
      assert not any(n in text for n in names)
      assert ex["knowledge_set"] == 0


def test_in_context_prompts_hold_the_facts(choice):
  _, data = choice
  for split in QUESTION_SPLITS:
    for ex in data[split]:
      assert ex["question"].startswith("Facts:\n")
      if ex["source"] == "reversal_curse":
        name, desc = ex["entities"]
        assert f"{name} is {desc}." in ex["question"]
      if ex["source"] == "simple_reversal":
        a, b = ex["entities"]
        assert re.search(rf"The {a} is \w+ than the {b}\.", ex["question"])


def test_multiple_choice_verifier(choice):
  task, data = choice
  for ex in data["test_reversal"][:5] + data["transfer_syllogism"][:5]:
    right, options = ex["answer_index"], ex["options"]
    wrong = (right + 1) % len(options)
    letter, other = "ABCDEFGH"[right], "ABCDEFGH"[wrong]
    cases = {
        letter: 1.0, f"({letter})": 1.0, f"{letter.lower()}.": 1.0, f"Option {letter}": 1.0,
        f"So, the answer is: {letter}": 1.0, options[right]: 1.0, options[right].upper(): 1.0,
        f"{letter}) {options[right]}": 1.0, f"{letter}) {options[wrong]}": 0.0,
        other: 0.0, options[wrong]: 0.0, f"{letter} or {other}": 0.0, "Z": 0.0, "": 0.0,
        chr(ord("Ａ") + right): 1.0,  # fullwidth letters are letters after NFKC
        {"A": "\u0410", "B": "\u0392", "C": "\u0421", "D": "\u13a0"}[letter]: 0.0,  # look-alikes
    }
    for answer, expected in cases.items():
      assert task.verify(f"<think>hmm</think>{answer}", ex) == expected, (answer, options)
    assert task.verify(f"<think>{letter}</think>{other}", ex) == 0.0
    assert task.verify(f"<think>{letter}", ex) == 0.0
    assert task.verify(task.prompt(ex), ex) == 0.0
    assert task.verify(f"<think>{'x' * 100_000}</think>{letter * 50_000}", ex) == 0.0
    rng = random.Random(0)
    pieces = ["<think>", "</think>", letter, other, options[right], "(", ")", "\n", "Option "]
    for _ in range(100):  # random mixtures of markers and answers never raise
      text = "".join(rng.choice(pieces) for _ in range(rng.randrange(8)))
      assert task.verify(text, ex) in (0.0, 1.0)


def test_free_answer_verifier(free):
  task, data = free
  ex = next(e for e in data["transfer_category_holdout"] if len(e["accepted"]) > 1)
  answer = ex["answer"]
  assert task.verify(f"<think>x</think>{answer}", ex) == 1.0
  assert task.verify(f"<think>x</think>So, the answer is: {ex['accepted'][1]}", ex) == 1.0
  assert task.verify(f"<think>x</think>{ex['options'][(ex['answer_index'] + 1) % 4]}", ex) == 0.0
  assert task.verify(f"<think>{answer}</think>", ex) == 0.0
  assert task.verify(f"<think>x</think>{answer} or {ex['options'][0]}{ex['options'][1]}", ex) == 0.0
  assert task.verify(answer, ex) == 0.0  # no thinking span
  assert task.verify(task.prompt(ex) + answer, ex) == 0.0
  look_alike = str.maketrans({"a": "\u0430", "e": "\u0435", "i": "\u0456", "o": "\u043e"})
  spoofed = [a for a in ex["accepted"] if a.translate(look_alike) != a]
  assert spoofed  # every nonsense word has a vowel, nearly always one of a, e, i, o
  for a in spoofed:
    assert task.verify(f"<think>x</think>{a.translate(look_alike)}", ex) == 0.0


def _words_in(text, phrase):
  return re.search(rf"(?<![\w']){re.escape(phrase.lower())}(?![\w'])", text.lower()) is not None


def test_traces_lead_to_the_right_answer(free, choice):
  for task, data in (free, choice):
    assert data["warm_start"] and (sorted(e["key"] for e in data["warm_start"])
                                   == sorted(e["key"] for e in data["rl_train"]))
    for split in QUESTION_SPLITS + ["warm_start"]:
      for ex in data[split]:
        lines = ex["trace"].split("\n")
        final = re.fullmatch(r"So the answer is (.+)\.", lines[-1]).group(1)
        assert task.verify(f"<think>{ex['trace']}</think>{final}", ex) == 1.0, ex["trace"]
        right = ex["options"][ex["answer_index"]]
        headers = [i for i, line in enumerate(lines) if _HEADER.match(line)]
        if headers:  # every option checked, in order; only the right one matches
          assert [_HEADER.match(lines[i]).group(1) for i in headers] == ex["options"]
          ends = headers[1:] + [len(lines) - 1]
          verdicts = [lines[end - 1] for end in ends]
          assert set(verdicts) <= {traces.MATCH, traces.NO_MATCH}
          assert [v == traces.MATCH for v in verdicts] == [
              i == ex["answer_index"] for i in range(len(ex["options"]))]
        else:  # the line before the answer names the right option and no other
          assert _words_in(lines[-2], right), (lines[-2], right)
          assert not any(_words_in(lines[-2], o) for o in ex["options"] if o != right)
        thinking = ex["trace"] if split == "warm_start" else ""
        assert task.reference(ex) == f"<think>{thinking}</think>{ex['answer']}"
    assert all(d["trace"] == d["thinking"] == "" for d in data["documents"])


def test_traces_recall_only_sentences_their_knowledge_set_was_trained_on(free):
  _, data = free
  documents = {}
  for d in data["documents"]:
    documents.setdefault(d["knowledge_set"], []).append(d["answer"])
  recalled = 0
  for ex in (e for s in QUESTION_SPLITS for e in data[s]):
    docs = documents[ex["knowledge_set"]]
    for line in ex["trace"].split("\n"):
      if line.startswith("So ") or _HEADER.match(line):
        continue
      recalled += 1
      assert any(_words_in(doc, line) for doc in docs), (line, ex["key"])
    if ex["source"] == "reversal_curse" and ex["kind"] == "reversal":  # never the reversed fact
      name, desc = ex["entities"]
      assert not any(line.lower().startswith(desc.lower()) for line in ex["trace"].split("\n"))
  assert recalled > 500


def _array_record_bytes(root: pathlib.Path) -> dict:
  return {p.relative_to(root).as_posix(): p.read_bytes()
          for p in sorted(root.rglob("*")) if "array_record" in p.name}


def test_built_files_are_deterministic_in_the_seed(tmp_path):
  files = {}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    task = tasks.get("latent_generalization", size="tiny", seed=seed,
                     data_dir=str(tmp_path / name))
    task.examples("documents")
    files[name] = _array_record_bytes(tmp_path / name)
  assert files["a"] and files["a"] == files["b"]
  assert list(files["c"].values()) != list(files["a"].values())


@pytest.mark.parametrize("options, message", [
    (dict(knowledge_sets=1), "knowledge_sets=1"),
    (dict(answer_format="essay"), "answer_format='essay'"),
    (dict(sources=("simple_reversal", "poetry")), "sources="),
    (dict(num_celebrities=60000), "num_celebrities=60000"),
    (dict(num_celebrities=3), "num_celebrities=3"),
    (dict(rl_fraction=1.0), "rl_fraction=1.0"),
    (dict(passages_per_fact=1), "passages_per_fact=1"),
    (dict(word_lists={"last_names": "/no/such/file.txt"}), "/no/such/file.txt"),
])
def test_bad_options_raise_one_clear_error(options, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    tasks.get("latent_generalization", **options)


def test_impossible_data_errors_name_the_option(tmp_path):
  task = tasks.get("latent_generalization", size="tiny", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown split 'test'"):
    task.examples("test")
  with pytest.raises(ValueError, match="num_holdout_categories=13"):
    list(tasks.get("latent_generalization", size="tiny", num_holdout_categories=13)
         .generate("documents"))
  with pytest.raises(ValueError, match="category_holdout"):
    list(tasks.get("latent_generalization", size="tiny", sources=("simple_reversal",))
         .generate("documents"))
