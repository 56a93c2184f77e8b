"""gsm8k: the grade-school math word problems of Cobbe et al. (2021), from the official files.

Sources (option `source`):
  "local": `path` is a directory with the official `train.jsonl` and `test.jsonl` (one
           {"question", "answer"} object per line; `*_socratic.jsonl` with `socratic=True`), i.e.
           github.com/openai/grade-school-math `grade_school_math/data`.
  "tfds":  TFDS's `gsm8k` builder in the task's data_dir (prepared already, or downloaded now).
  "auto":  "local" when `path` is given, else "tfds" when TFDS's gsm8k is already prepared or its
           host answers within a few seconds, else an error saying to pass `path` (without
           network a TFDS download only fails after minutes of retries).
A solution reads "step\\nstep\\n#### 72"; the reference answer is what follows "####" (commas
dropped), the reference thinking is the steps with the "<<48/2=24>>" calculator annotations removed
(kept with `keep_calculator_annotations`), "operations" are the annotated expressions in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
from typing import Iterator

from rlthink.tasks import answers, arithmetic
from rlthink.tasks.base import Task, default_data_dir

_ANNOTATION = re.compile(r"<<[^<>]{0,200}>>")
SOURCES = ("auto", "local", "tfds")
_HOST = "raw.githubusercontent.com"  # where TFDS's gsm8k builder downloads from


def split_solution(solution: str) -> tuple[str, str]:
  """(steps text, final answer) of a GSM8K solution "...\\n#### 72"; the answer without commas.

  Raises ValueError when the "####" line is missing.
  """
  steps, marker, final = solution.rpartition("####")
  if not marker:
    raise ValueError(f"GSM8K solution without a '#### answer' line: {solution[-80:]!r}")
  return steps.strip(), final.strip().replace(",", "")


def extract_answer(text: str) -> str | None:
  """The standard GSM8K extraction: the number after the last "####", else None."""
  after = answers.answer_after(text, "####")
  number = answers.parse_number(after.strip().split("\n")[0]) if after is not None else None
  return None if number is None else answers.canonical_number(str(number))


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options; max_train/max_test keep the first N examples of a split (None: all)."""

  size: str = "default"
  source: str = "auto"
  path: str | None = None
  socratic: bool = False
  keep_calculator_annotations: bool = False
  max_train: int | None = None
  max_test: int | None = None

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"gsm8k: option source={self.source!r}; expected one of {SOURCES}")
    if self.source == "local" and self.path is None:
      raise ValueError("gsm8k: source='local' needs option path=DIR holding train.jsonl/test.jsonl")
    for name in ("max_train", "max_test"):
      value = getattr(self, name)
      if value is not None and value < 0:
        raise ValueError(f"gsm8k: option {name}={value} must be >= 0 or None")
    if self.path is not None and self.source != "tfds":
      for split in ("train", "test"):
        file = _local_file(self.path, split, self.socratic)
        if not os.path.isfile(file):
          raise FileNotFoundError(f"gsm8k: option path={self.path!r}: missing {file} (the "
                                  "official grade_school_math/data jsonl files)")


def _local_file(path: str, split: str, socratic: bool) -> str:
  return os.path.join(os.path.expanduser(path), f"{split}{'_socratic' if socratic else ''}.jsonl")


def _read_jsonl(file: str) -> Iterator[dict]:
  with open(file, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        yield {"question": record["question"], "answer": record["answer"]}
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{file}:{line_number}: expected a JSON object with 'question' and "
                         f"'answer' ({type(e).__name__}: {e})") from e


def _tfds_builder(data_dir: str):
  import tensorflow_datasets as tfds  # heavy, and only the TFDS source needs it
  import tensorflow_datasets.text.gsm8k  # noqa: F401  (registers the "gsm8k" builder)
  return tfds.builder("gsm8k", data_dir=data_dir, file_format="array_record")


def _reachable(host: str, timeout: float = 3.0) -> bool:
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _check_tfds_reachable(builder, data_dir: str) -> None:
  """Fails at once when TFDS's gsm8k is not prepared and its host is unreachable (offline, TFDS
  would retry the download for minutes before failing)."""
  if not builder.is_prepared() and not _reachable(_HOST):
    raise FileNotFoundError(
        f"gsm8k: TFDS's gsm8k is not prepared under {data_dir} and {_HOST} is unreachable; pass "
        "option path=DIR holding the official train.jsonl and test.jsonl "
        "(github.com/openai/grade-school-math grade_school_math/data)")


def _read_tfds(split: str, socratic: bool, data_dir: str) -> Iterator[dict]:
  builder = _tfds_builder(data_dir)
  _check_tfds_reachable(builder, data_dir)
  if not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception as e:  # no network, blocked URL...: one message saying what to do instead
      raise RuntimeError(f"gsm8k: TFDS's gsm8k builder could not download into {data_dir} "
                         f"({type(e).__name__}: {e}); pass option path=DIR holding the official "
                         "train.jsonl and test.jsonl instead") from e
  source = builder.as_data_source(split=f"{split}_socratic" if socratic else split)
  for index in range(len(source)):
    record = source[index]
    yield {"question": record["question"].decode(), "answer": record["answer"].decode()}


class Gsm8k(Task):
  """GSM8K math word problems with their reference solutions."""

  name = "gsm8k"
  version = "1.0.0"
  answer_kind = "number"  # majority votes compare `answers.number_key`
  splits = ("train", "test")
  features = {"id": "text", "question": "text", "answer": "text", "thinking": "text",
              "steps": "text_list", "operations": "text_list", "solution": "text"}
  Options = Options
  sizes = {"tiny": dict(max_train=64, max_test=16), "default": {}}

  @property
  def config_name(self) -> str:
    """Adds a hash of the local files, so edited files never reuse a stale dataset."""
    name = super().config_name
    if self._source() != "local":
      return name
    digest = hashlib.sha256()
    for split in self.splits:
      with open(_local_file(self.options.path, split, self.options.socratic), "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    return f"{name}-{digest.hexdigest()[:10]}"

  def _source(self) -> str:
    opts = self.options
    return opts.source if opts.source != "auto" else ("local" if opts.path else "tfds")

  def examples(self, split: str):
    """As `Task.examples`; reading from TFDS, fails fast when TFDS cannot help (offline)."""
    if self._source() == "tfds":
      data_dir = default_data_dir(self.data_dir)
      _check_tfds_reachable(_tfds_builder(data_dir), data_dir)
    return super().examples(split)

  def records(self, split: str) -> Iterator[dict]:
    """The raw {"question", "answer"} records of `split`, in file order."""
    self.check_split(split)
    if self._source() == "local":
      return _read_jsonl(_local_file(self.options.path, split, self.options.socratic))
    return _read_tfds(split, self.options.socratic, default_data_dir(self.data_dir))

  def generate(self, split: str) -> Iterator[dict]:
    limit = self.options.max_train if split == "train" else self.options.max_test
    for index, record in enumerate(self.records(split)):
      if limit is not None and index >= limit:
        return
      steps_text, final = split_solution(record["answer"])
      thinking = steps_text
      if not self.options.keep_calculator_annotations:
        thinking = _ANNOTATION.sub("", steps_text)
      operations = [expr for expr, _ in answers.find_equations(
          " ".join(_ANNOTATION.findall(steps_text)))]
      yield {"id": f"{split}-{index:05d}", "question": record["question"].strip(),
             "answer": final, "thinking": thinking,
             "steps": [line for line in thinking.split("\n") if line.strip()],
             "operations": operations, "solution": record["answer"]}

  def verify_answer(self, answer: str, example: dict) -> float:
    return answers.verify_number(answer, example["answer"])

  def operations(self, completion: str, with_operands: bool = True) -> tuple[str, ...]:
    """The operation sequence of a completion (Expert Iteration de-duplication)."""
    return arithmetic.operation_sequence(completion, with_operands, self.format)


def make_task(**options) -> Gsm8k:
  return Gsm8k.from_options(**options)
