"""generic: bring-your-own question/answer data from local files.

    rlthink.tasks.get("generic", train="/data/train.jsonl", test="/data/test.jsonl",
                      question_field="problem", answer_field="solution_value",
                      thinking_field="rationale", answer_check="math")

Data (see `rlthink.tasks.records` for the formats): `train`, `validation`, `test` each name a
.jsonl / .json / .parquet file or a `Dataset.save_to_disk` directory; or `path` names a
`DatasetDict.save_to_disk` directory (its splits), a `Dataset.save_to_disk` directory (split
"train") or a directory of `<split>.jsonl|.json|.parquet` files. The task's splits are those given.

Fields: `question_field` and `answer_field` (required in every record), `thinking_field` (the
reference thinking of SFT targets; empty when None) and `id_field` (unique per split; else ids are
"<split>-<index>"). The stored dataset's name carries a hash of the files' contents, so an edited
file is rebuilt, never read stale.

`answer_check` picks the verifier of the answer span: "exact" (`answers.verify_text`: the last line,
normalized), "numeric" (`answers.verify_number`: the last number, exactly; every reference must be
one number) or "math" (`math_answers.verify_math`: boxed answers, fractions, LaTeX, percents,
compared as exact rationals).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Iterator

from rlthink.tasks import answers, math_answers, records
from rlthink.tasks.base import Task

ANSWER_CHECKS = ("exact", "numeric", "math")
SPLIT_OPTIONS = ("train", "validation", "test")
_SPLIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class Options:
  """Data options; `max_examples` keeps the first N records of every split (None: all)."""

  size: str = "default"
  train: str | None = None
  validation: str | None = None
  test: str | None = None
  path: str | None = None
  question_field: str = "question"
  answer_field: str = "answer"
  thinking_field: str | None = None
  id_field: str | None = None
  answer_check: str = "math"
  max_examples: int | None = None

  def __post_init__(self):
    if self.answer_check not in ANSWER_CHECKS:
      raise ValueError(f"generic: option answer_check={self.answer_check!r}; expected one of "
                       f"{ANSWER_CHECKS}")
    given = [name for name in SPLIT_OPTIONS if getattr(self, name) is not None]
    if (self.path is None) == (not given):
      raise ValueError("generic: pass either option path=DIR or a file per split (train=FILE, "
                       f"validation=FILE, test=FILE), not {'both' if given else 'neither'}")
    for name in ("question_field", "answer_field"):
      if not getattr(self, name):
        raise ValueError(f"generic: option {name} must name a field")
    if self.max_examples is not None and self.max_examples < 1:
      raise ValueError(f"generic: option max_examples={self.max_examples} must be >= 1 or None")
    for name in SPLIT_OPTIONS + ("path",):  # absolute paths: the stored options say which files
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, os.path.abspath(os.path.expanduser(value)))


def split_files(opts: Options) -> dict[str, str]:
  """{split: file or save_to_disk directory} of the options, in split order; errors name paths."""
  if opts.path is None:
    files = {name: getattr(opts, name) for name in SPLIT_OPTIONS if getattr(opts, name)}
  elif not os.path.isdir(opts.path):
    raise FileNotFoundError(f"generic: option path={opts.path!r} is not a directory")
  elif os.path.isfile(os.path.join(opts.path, records.DATASET_DICT)):
    files = records.dataset_dict_splits(opts.path)
  elif os.path.isfile(os.path.join(opts.path, records.DATASET_STATE)):
    files = {"train": opts.path}
  else:
    found = {name.rsplit(".", 1)[0]: os.path.join(opts.path, name)
             for name in sorted(os.listdir(opts.path)) if name.endswith(records.EXTENSIONS)}
    order = [s for s in SPLIT_OPTIONS if s in found] + sorted(set(found) - set(SPLIT_OPTIONS))
    files = {split: found[split] for split in order}
    if not files:
      raise FileNotFoundError(f"generic: option path={opts.path!r} holds no <split>.jsonl, .json "
                              "or .parquet file and was not saved with datasets' save_to_disk")
  for split, file in files.items():
    if not _SPLIT_NAME.fullmatch(split):
      raise ValueError(f"generic: split name {split!r} (from {file}) must be letters, digits, '_'")
    records.kind(file)  # exists and has a known format, else a message naming it
  return files


def _text(record: dict, field: str, option: str, where: str) -> str:
  """`record[field]` as text (numbers and lists as JSON); errors name the field and the file."""
  if field not in record:
    shown = ", ".join(repr(k) for k in list(record)[:12])
    raise ValueError(f"generic: {where}: no field {field!r} (its fields: {shown}); "
                     f"set option {option}=<field name>")
  value = record[field]
  if value is None:
    raise ValueError(f"generic: {where}: field {field!r} is null")
  return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class Generic(Task):
  """Questions and answers read from local files, checked by an exact, numeric or math verifier."""

  name = "generic"
  version = "1.0.0"
  splits = ()  # per instance: the splits of the files given
  features = {"id": "text", "question": "text", "answer": "text", "thinking": "text"}
  Options = Options
  sizes = {"tiny": dict(max_examples=64), "default": {}}

  def __init__(self, options: Options, prompt_format=None, data_dir: str | None = None):
    super().__init__(options, prompt_format, data_dir)
    self.files = split_files(options)
    self.splits = tuple(self.files)
    self.answer_kind = "number" if options.answer_check == "numeric" else "text"
    self._content_digest: str | None = None
    for split, file in self.files.items():  # a wrong field name fails now, not at build time
      for where, record in records.read(file):
        self._example(split, 0, where, record)
        break
      else:
        raise ValueError(f"generic: {file} holds no records (split {split!r})")

  @property
  def config_name(self) -> str:
    """Adds a hash of the files' contents, so edited files never reuse a stale dataset."""
    if self._content_digest is None:
      digest = hashlib.sha256()
      for split, file in self.files.items():
        digest.update(f"{split}\0{records.content_hash(file)}\0".encode())
      self._content_digest = digest.hexdigest()[:10]
    return f"{super().config_name}-{self._content_digest}"

  def _example(self, split: str, index: int, where: str, record: dict) -> dict:
    opts = self.options
    answer = _text(record, opts.answer_field, "answer_field", where).strip()
    if opts.answer_check == "numeric" and answers.parse_number(answer) is None:
      raise ValueError(f"generic: {where}: answer_check='numeric' but field "
                       f"{opts.answer_field!r} is {answer[:80]!r}, not one number")
    return {
        "id": (_text(record, opts.id_field, "id_field", where) if opts.id_field
               else f"{split}-{index:06d}"),
        "question": _text(record, opts.question_field, "question_field", where).strip(),
        "answer": answer,
        "thinking": (_text(record, opts.thinking_field, "thinking_field", where).strip()
                     if opts.thinking_field else ""),
    }

  def generate(self, split: str) -> Iterator[dict]:
    self.check_split(split)
    seen: dict[str, str] = {}
    for index, (where, record) in enumerate(records.read(self.files[split])):
      if self.options.max_examples is not None and index >= self.options.max_examples:
        return
      example = self._example(split, index, where, record)
      if example["id"] in seen:
        raise ValueError(f"generic: {where}: id {example['id']!r} (field "
                         f"{self.options.id_field!r}) repeats {seen[example['id']]}")
      seen[example["id"]] = where
      yield example

  def verify_answer(self, answer: str, example: dict) -> float:
    check = self.options.answer_check
    if check == "math":
      return math_answers.verify_math(answer, example["answer"])
    if check == "numeric":
      return answers.verify_number(answer, example["answer"])
    return answers.verify_text(answer, example["answer"])

  def answer_key(self, completion: str) -> str | None:
    """What majority votes compare: the answer as `answer_check` reads it (see `verify_answer`)."""
    span = self.format.split(completion).answer
    if span is None:
      return None
    if self.options.answer_check == "math":
      return math_answers.math_key(span)
    if self.options.answer_check == "numeric":
      return answers.number_key(span)
    return answers.normalize_text(answers.last_line(span)) or None


def make_task(**options) -> Generic:
  return Generic.from_options(**options)
