"""latent_generalization: reversals, syllogisms and category inheritance over facts learned in the
weights (Chaudhry, Thiagarajan, Lampinen, 2026; data after Lampinen et al., arXiv 2505.00661).

Four sources, each with training documents and test questions (see their modules):
  simple_reversal  comparison facts between nonsense-word entities; forced choice of the reversal
  syllogism        two trained premises; the six quantifier x direction statements
  reversal_curse   fictional celebrities name <-> description (forward-only vs both orders)
  semantic         a ~110-category nonsense hierarchy with inherited properties
Splits (see `dataset.py`): documents, rl_train (knowledge set 0), warm_start (rl_train's questions
with thinking traces), test_<kind> (set 0, held out from RL) and transfer_<kind> (the other
knowledge sets). Options pick the answer form ("free": verified text; "multiple_choice": lettered
options, a letter or the option text counts) and the in-context variant (facts in the prompt).

    task = rlthink.tasks.get("latent_generalization", size="tiny", answer_format="multiple_choice")
    task.verify("<think>...</think>B", task.examples("test_reversal")[0])

Every question example carries "trace", the templated thinking a teacher given the answer would
write (`traces.py`); the reference completion of warm_start examples thinks it, that of every
other split has an empty thinking span. `option_answers` gives what the model would answer for
each option, for scoring multiple choice by likelihood (EvalConfig metric "likelihood").
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from typing import Iterator, Sequence

from rlthink.tasks import answers
from rlthink.tasks.base import Task
from rlthink.tasks.complementary_reasoning import final_answer
from rlthink.tasks.latent_generalization.dataset import SPLITS, Options, generate_all

# "B", "(B)", "B.", "B) <option text>", "Option B": a letter, optionally followed by its text.
_LETTER = re.compile(r"(?:option\s+)?\(?([a-z])\)?(?:\s*[.):]\s*(.*))?", re.IGNORECASE | re.DOTALL)


def _final(answer_span: str) -> str:
  return answers.last_line(final_answer(answer_span)).strip()


def verify_free(answer_span: str, accepted: Sequence[str]) -> float:
  """1.0 when the final answer equals one of `accepted` after `answers.normalize_text`."""
  predicted = answers.normalize_text(_final(answer_span))
  return 1.0 if predicted and predicted in {answers.normalize_text(a) for a in accepted} else 0.0


def verify_choice(answer_span: str, options: Sequence[str], answer_index: int) -> float:
  """1.0 when the final answer names option `answer_index`, by letter or by its text.

  A letter followed by text counts only when the text is that option's; an option text counts
  only when it matches exactly one option. Letters are read after NFKC (fullwidth "Ｂ" is B);
  look-alikes from other scripts are not letters.
  """
  final = unicodedata.normalize("NFKC", _final(answer_span))
  match = _LETTER.fullmatch(final)
  if match and match.group(1).isascii():
    index = string.ascii_uppercase.index(match.group(1).upper())
    rest = (match.group(2) or "").strip()
    if index >= len(options):
      return 0.0
    if rest and answers.normalize_text(rest) != answers.normalize_text(options[index]):
      return 0.0
    return float(index == answer_index)
  predicted = answers.normalize_text(final)
  hits = [i for i, option in enumerate(options) if answers.normalize_text(option) == predicted]
  return float(bool(predicted) and hits == [answer_index])


class LatentGeneralization(Task):
  """Latent generalization of in-weights facts: reversal, syllogism, inheritance, transfer."""

  name = "latent_generalization"
  version = "1.1.0"
  splits = SPLITS
  features = {
      "id": "text", "question": "text", "answer": "text", "accepted": "text_list",
      "options": "text_list", "answer_index": "int", "answer_format": "text", "source": "text",
      "kind": "text", "key": "text", "knowledge_set": "int", "entities": "text_list",
      "trace": "text", "thinking": "text",
  }
  Options = Options
  sizes = {
      "tiny": dict(num_comparison_facts=6, passages_per_fact=2, num_syllogisms=6,
                   num_celebrities=8, num_categories=14, max_properties=3,
                   num_holdout_categories=2, num_documents=28),
      "default": {},
  }

  @functools.cached_property
  def _data(self) -> dict[str, list[dict]]:
    return generate_all(self.options)

  def generate(self, split: str) -> Iterator[dict]:
    yield from self._data[self.check_split(split)]

  def option_answers(self, example: dict) -> list[str] | None:
    """The answer the model would give for each option: its letter in the multiple-choice format,
    its text in the free one; None for documents (no options)."""
    options = list(example.get("options") or [])
    if not options:
      return None
    if example.get("answer_format") == "multiple_choice":
      return list(string.ascii_uppercase[:len(options)])
    return options

  def verify_answer(self, answer: str, example: dict) -> float:
    """Multiple-choice examples: `verify_choice`; the others: `verify_free` on "accepted"."""
    if example.get("answer_format") == "multiple_choice":
      return verify_choice(answer, example["options"], int(example["answer_index"]))
    return verify_free(answer, example["accepted"])


def make_task(**options) -> LatentGeneralization:
  return LatentGeneralization.from_options(**options)
