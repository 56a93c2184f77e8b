"""Warm-start thinking traces: what a teacher model given the answer would write before answering.

Chaudhry, Thiagarajan and Lampinen (2026) warm-start thinking on traces a teacher wrote (wrong ones
filtered) before RL. Ours are templated per source, one step per line, and always lead to the
answer:
  simple_reversal  recall the trained forward fact, derive the asked direction
  syllogism        recall both premises, derive what follows about the end terms, judge the claim
  reversal_curse   name from description: check each option by recalling its forward fact
                   (generate and verify); description from name: recall the forward fact
  semantic         recall the fact; inherited properties: walk the membership chain up to the
                   category that has the property; reversals: check each option's own facts
A line is either a trained fact in its canonical wording (the wording the training documents use
at least once, so a trace recalls only what the weights were given), a derived line starting with
"So ", or, when options are checked, an option header ("B. <option>"; "Candidate: <option>" in the
free-answer format). The last line names the answer: "So the answer is B."
"""

from __future__ import annotations

import string
from typing import Sequence

MATCH, NO_MATCH = "So it matches.", "So it does not match."
FINAL = "So the answer is {}."


def verdict(correct: bool) -> str:
  """The last line of an option's check."""
  return MATCH if correct else NO_MATCH


def derived(sentence: str) -> str:
  """A derived line: "So " + the sentence with its first letter lowered ("So glorps eat zibs.")."""
  return "So " + sentence[:1].lower() + sentence[1:]


def compose(recall: Sequence[str], checks: Sequence[Sequence[str]], options: Sequence[str],
            multiple_choice: bool, answer_index: int, free_answer: str) -> str:
  """The trace text of one example.

  recall: the lines before the options; checks: per shown option (in `options`' order) its lines,
  or empty; multiple_choice: name options by letter (else as candidates and the answer by text);
  answer_index: the correct option's position in `options`; free_answer: the free-format answer.
  """
  lines = list(recall)
  for i, (option, check) in enumerate(zip(options, checks)):
    lines.append(f"{string.ascii_uppercase[i]}. {option}" if multiple_choice
                 else f"Candidate: {option}")
    lines.extend(check)
  lines.append(FINAL.format(string.ascii_uppercase[answer_index] if multiple_choice
                            else free_answer))
  return "\n".join(lines)
