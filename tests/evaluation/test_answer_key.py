"""Majority votes compare answers the way the verifier reads them: "8", "8.0", "$8" and "８" are
one vote on a number task, and case or punctuation does not split a text answer."""

from rlthink import tasks
from rlthink.evaluation.estimators import maj_at_k
from rlthink.evaluation.evaluate import answer_key


def test_equal_numbers_in_any_spelling_are_one_vote():
  task = tasks.get("arithmetic", size="tiny")
  keys = [answer_key(task, f"<think>4+4=8</think>{a}") for a in
          ("8", "8.0", "$8", "The answer is 8 apples.", "８", "008", "8.00")]
  assert set(keys) == {"8"}
  assert answer_key(task, "<think>4+4=8</think>9") == "9"
  assert answer_key(task, "<think>4+4=8</think>-0.50") == "-0.5"
  assert answer_key(task, "<think>4+4=8</think>no number") is None  # no vote
  assert answer_key(task, "4+4=8") is None  # no answer span
  # Three right answers spelled differently outvote two identical wrong ones.
  completions = ["<think></think>9", "<think></think>8.0", "<think></think>9",
                 "<think></think>$8", "<think></think>8"]
  correct = [task.verify(c, {"answer": "8"}) == 1.0 for c in completions]
  assert correct == [False, True, False, True, True]
  assert maj_at_k([answer_key(task, c) for c in completions], correct, 5) == 1.0


def test_text_answers_vote_on_the_normalized_last_line():
  task = tasks.get("general_qa", size="tiny")
  keys = {answer_key(task, f"<think>x</think>{a}") for a in ("Paris", "paris.", " The  Paris ")}
  assert keys == {"paris"}
  assert answer_key(task, "<think>x</think>Lyon") == "lyon"
