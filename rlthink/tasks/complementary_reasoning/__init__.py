"""complementary_reasoning: multi-hop questions over synthetic biographies (Cheng et al., 2025).

A world of synthetic people with 39 relations (`relations.py`), split into a parametric group
(learned in the weights from biographies) and a contextual group (given in the prompt as contextual
biographies). Questions follow 2-5-hop relation paths (person -> person relations on every hop but
the last) and are answered by a chain of thought, one step per hop, then the answer:

    Question: Who is the spouse of the boss of Alice Smith?
    <think>The boss of Alice Smith is Bob Jones.
    The spouse of Bob Jones is Carol White.</think>So, the answer is: Carol White

Splits (see `dataset.py`): biographies, mem, ctx, comp (training); test_iid, test_composition,
test_zero_shot (complementary paths about held-out start people). Every question example records
its relation path ("relations"), "groups", "relation_kinds" (iid / composition / zero_shot),
"hops", "category", "start", "entities" (start, each intermediate person, the answer) and
"context_people" (whose contextual biographies the prompt holds), so leakage can be checked.

Sizes: "default" = 10k parametric people + 5k new people, 20k mem / 10k ctx / 10k comp questions,
1500 / 900 / 600 test questions (the paper's 5:3:2 test mix); "small" = a tenth of that (1k
parametric people, 500 new, 2k / 1k / 1k questions, 500 / 300 / 200 test questions) with six
reworded biographies per person, for models trained from scratch; "tiny" for tests (~1 s).
The paper's exact question counts were not available; these are our choice and are options.
Run `python -m rlthink.tasks.complementary_reasoning` to time the default build.
"""

from __future__ import annotations

import functools
import re
from typing import Iterator

from rlthink.tasks import answers
from rlthink.tasks.base import Task
from rlthink.tasks.complementary_reasoning.dataset import SPLITS, Options, generate_all

ANSWER_PREFIX = "So, the answer is:"
# The last "the answer is" (any case, optional colon) marks the final answer in the answer span.
_MARKER = re.compile(r"the answer is\s*:?", re.IGNORECASE)


def final_answer(answer_span: str) -> str:
  """The text after the last "the answer is:" in the answer span, else the whole span."""
  last = None
  for last in _MARKER.finditer(answer_span):
    pass
  return answer_span[last.end():] if last is not None else answer_span


class ComplementaryReasoning(Task):
  """Parametric, contextual and complementary multi-hop reasoning over synthetic biographies."""

  name = "complementary_reasoning"
  version = "1.0.0"
  splits = SPLITS
  features = {
      "id": "text", "question": "text", "answer": "text", "thinking": "text",
      "steps": "text_list", "relations": "text_list", "groups": "text_list",
      "relation_kinds": "text_list", "hops": "int", "category": "text", "start": "text",
      "entities": "text_list", "context_people": "text_list",
  }
  Options = Options
  sizes = {
      "tiny": dict(num_people=60, num_new_people=30, num_mem=40, num_ctx=30, num_comp=40,
                   num_test_iid=15, num_test_composition=9, num_test_zero_shot=6),
      # The GPU-scale world of configs/experiments/complementary_reasoning.gin: a tenth of the
      # paper's people and questions, six differently worded biographies per person (knowledge
      # augmentation: a model trained from scratch needs them to extract the facts it memorizes).
      "small": dict(num_people=1000, num_new_people=500, num_mem=2000, num_ctx=1000,
                    num_comp=1000, num_test_iid=500, num_test_composition=300,
                    num_test_zero_shot=200, biography_variants=6),
      "default": {},
  }

  @functools.cached_property
  def _data(self) -> dict[str, list[dict]]:
    return generate_all(self.options)

  def generate(self, split: str) -> Iterator[dict]:
    yield from self._data[self.check_split(split)]

  def answer(self, example: dict) -> str:
    """The answer span of the reference: "So, the answer is: X" (the biography text itself for
    the biographies split)."""
    if example.get("category") == "biography":
      return str(example["answer"])
    return f"{ANSWER_PREFIX} {example['answer']}"

  def verify_answer(self, answer: str, example: dict) -> float:
    """Exact match (after `answers.normalize_text`) of the final answer with the reference."""
    return answers.verify_text(final_answer(answer), str(example["answer"]))


def make_task(**options) -> ComplementaryReasoning:
  return ComplementaryReasoning.from_options(**options)
