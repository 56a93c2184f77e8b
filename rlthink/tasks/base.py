"""The `Task` interface every task family implements, and how a family module plugs in.

A task family is one module under `rlthink/tasks/` that exposes

    def make_task(**options) -> Task

(`rlthink.tasks.get(name, **options)` imports the module named in `rlthink.tasks.FAMILIES` lazily
and calls it). A family subclasses `Task` and writes only what is specific to it:

  name      registry name, also the TFDS builder name ("rlthink_" + name).
  version   "MAJOR.MINOR.PATCH"; bump it whenever `generate` changes what it yields.
  splits    the split names, in order.
  features  {field: kind} of every example field; kinds are FEATURE_KINDS. "id", "question" and
            "answer" are required; "thinking" (reference chain of thought), "steps" (per-step
            annotations) and "operations" (the operation sequence) are read when present.
  Options   a frozen dataclass of the options that change the data (seed, sizes, files...).
  sizes     {size name: {option: value}}; the `size` option picks one ("tiny" must exist), options
            passed explicitly override it.
  generate(split)              -> Iterator[dict]: the examples, deterministic given the options.
  verify_answer(answer, ex)    -> float in [0, 1] from the answer span only (never raises).
  demonstration(ex) (optional) -> (thinking, answer) SFT imitates, when not the reference.

Everything else (prompt text, reference completion, thinking/answer split, TFDS building and
reading) is shared here and in `builder.py`. Options that only change formatting live in
`PromptFormat` and never change the stored data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, ClassVar, Iterator, Sequence

from rlthink.tasks import answers

FEATURE_KINDS = ("text", "int", "float", "bool", "text_list", "int_list", "json")
DEFAULT_DATA_DIR_ENV = "RLTHINK_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class PromptFormat:
  """How a question becomes a prompt and a (thinking, answer) pair becomes a completion.

  The completion is `think_open + thinking + think_close + answer`; when `open_thinking_in_prompt`
  the prompt already ends with `think_open` and the completion starts inside the thinking span.
  `require_thinking`: a completion without a closed thinking span scores 0 (when False, text without
  any marker is all answer). `chat_template`: "never" (plain `question_template`), "auto" (the
  tokenizer's chat template when it has one) or "always" (error when it has none).
  """

  think_open: str = "<think>"
  think_close: str = "</think>"
  require_thinking: bool = True
  open_thinking_in_prompt: bool = False
  chat_template: str = "never"
  system_prompt: str | None = None
  question_template: str = "{question}\n"

  def __post_init__(self):
    if not self.think_open or not self.think_close or self.think_open == self.think_close:
      raise ValueError(f"PromptFormat: think_open {self.think_open!r} and think_close "
                       f"{self.think_close!r} must be non-empty and different")
    if self.chat_template not in ("never", "auto", "always"):
      raise ValueError(f"PromptFormat.chat_template={self.chat_template!r}; expected one of "
                       "'never', 'auto', 'always'")
    if "{question}" not in self.question_template:
      raise ValueError("PromptFormat.question_template must contain '{question}'")

  def prompt(self, question: str, tokenizer: Any = None) -> str:
    """The prompt text for `question` (ends with `think_open` when `open_thinking_in_prompt`)."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if self.chat_template == "always" and not template:
      raise ValueError("PromptFormat.chat_template='always' but the tokenizer has no chat template")
    if self.chat_template != "never" and template:
      messages = [{"role": "user", "content": question}]
      if self.system_prompt:
        messages.insert(0, {"role": "system", "content": self.system_prompt})
      text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
      text = (self.system_prompt + "\n" if self.system_prompt else "")
      text += self.question_template.format(question=question)
    return text + self.think_open if self.open_thinking_in_prompt else text

  def completion(self, thinking: str, answer: str) -> str:
    """The completion text for a reference (thinking, answer) pair, matching `prompt`."""
    opener = "" if self.open_thinking_in_prompt else self.think_open
    return f"{opener}{thinking}{self.think_close}{answer}"

  def split(self, completion: str) -> answers.Split:
    """Splits a completion into its thinking and answer spans (see `answers.split_thinking`)."""
    return answers.split_thinking(completion, self.think_open, self.think_close,
                                  require_thinking=self.require_thinking,
                                  opened_in_prompt=self.open_thinking_in_prompt)


def resolve_options(task_name: str, options_cls: type, sizes: dict[str, dict], given: dict) -> Any:
  """Builds `options_cls` from `given` on top of `sizes[given["size"]]`, naming any bad option."""
  fields = {f.name: f for f in dataclasses.fields(options_cls)}
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise ValueError(f"task {task_name!r}: unknown option(s) {unknown}; expected some of "
                     f"{sorted(fields)} (or data_dir, prompt_format)")
  merged = {}
  if "size" in fields:
    size = given.get("size", fields["size"].default)
    if size not in sizes:
      raise ValueError(f"task {task_name!r}: option size={size!r}; expected one of {sorted(sizes)}")
    merged.update(sizes[size])
  merged.update(given)
  for name, value in merged.items():
    _check_option_type(task_name, name, value, fields[name].type)
  return options_cls(**merged)


_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_option_type(task_name: str, name: str, value, annotation) -> None:
  """Raises ValueError unless `value` fits a simple annotation ("int", "float | None", ...): a
  string seed would otherwise name the dataset's directory (seed="../x" leaves the data_dir).
  Other annotations (tuples, dicts) are the family's own `__post_init__`'s to check."""
  text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
  kinds = [k.strip() for k in text.split("|")]
  if not all(k in _SIMPLE_TYPES or k == "None" for k in kinds):
    return
  if value is None and "None" in kinds:
    return
  for kind in kinds:
    if kind != "None" and isinstance(value, _SIMPLE_TYPES[kind]) and (
        kind == "bool" or not isinstance(value, bool)):
      return
  raise ValueError(f"task {task_name!r}: option {name}={value!r} must be {text}")


class Task:
  """One task family with its options: examples per split, prompts, references and a verifier."""

  name: ClassVar[str]
  version: ClassVar[str] = "1.0.0"
  splits: ClassVar[tuple[str, ...]]
  features: ClassVar[dict[str, str]]
  Options: ClassVar[type]
  sizes: ClassVar[dict[str, dict]] = {}

  def __init__(self, options: Any, prompt_format: PromptFormat | dict | None = None,
               data_dir: str | None = None):
    if isinstance(prompt_format, dict):
      prompt_format = PromptFormat(**prompt_format)
    self.options = options
    self.format = prompt_format or PromptFormat()
    self.data_dir = data_dir
    missing = {"id", "question", "answer"} - set(self.features)
    bad = {k: v for k, v in self.features.items() if v not in FEATURE_KINDS}
    if missing or bad:
      raise TypeError(f"{type(self).__name__}.features: missing {sorted(missing)}, bad kinds {bad}")

  @classmethod
  def from_options(cls, data_dir: str | None = None, prompt_format=None, **options) -> "Task":
    """Validates `options` against `Options`/`sizes` and builds the task (what make_task calls)."""
    return cls(resolve_options(cls.name, cls.Options, cls.sizes, options), prompt_format, data_dir)

  # --- to implement in a family -------------------------------------------------------------
  def generate(self, split: str) -> Iterator[dict]:
    """Yields the examples of `split`, deterministic given `self.options`; ids unique per split."""
    raise NotImplementedError

  def verify_answer(self, answer: str, example: dict) -> float:
    """Scores the answer span (thinking already removed) in [0, 1]; must never raise."""
    raise NotImplementedError

  # --- shared -------------------------------------------------------------------------------
  @property
  def config_name(self) -> str:
    """Names the stored dataset: readable size/seed plus a hash of every data option."""
    opts = dataclasses.asdict(self.options)
    digest = hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()
    parts = [str(opts[k]) if k == "size" else f"{k}{opts[k]}"
             for k in ("size", "seed") if k in opts]
    return "-".join(parts + [digest[:10]])

  def check_split(self, split: str) -> str:
    if split not in self.splits:
      raise ValueError(f"task {self.name!r}: unknown split {split!r}; "
                       f"expected one of {self.splits}")
    return split

  def examples(self, split: str) -> Sequence[dict]:
    """Random-access examples of `split`, read from the TFDS dataset (built on first use)."""
    from rlthink.tasks import builder  # TFDS loads only when data is needed
    return builder.data_source(self, self.check_split(split))

  def prompt(self, example: dict, tokenizer: Any = None) -> str:
    return self.format.prompt(example["question"], tokenizer)

  def thinking(self, example: dict) -> str:
    """The reference chain of thought: the "thinking" field, else the steps one per line."""
    if example.get("thinking"):
      return example["thinking"]
    return "\n".join(example.get("steps") or [])

  def answer(self, example: dict) -> str:
    """The reference answer text, as it appears after the thinking span."""
    return str(example["answer"])

  def reference(self, example: dict) -> str:
    """The reference completion: thinking span, then the answer."""
    return self.format.completion(self.thinking(example), self.answer(example))

  def demonstration(self, example: dict) -> tuple[str, str]:
    """The (thinking, answer) that SFT imitates: the reference by default; a family may mix
    other behaviours into its SFT data (general_qa's shortcut demonstrations)."""
    return self.thinking(example), self.answer(example)

  def steps(self, example: dict) -> list[str] | None:
    """Per-step annotations (for dense / process rewards), or None when the family has none."""
    steps = example.get("steps")
    return list(steps) if steps is not None else None

  def verify(self, completion: str, example: dict) -> float:
    """1.0 when the answer after the thinking span is right; 0 for no (closed) answer span.

    Only the answer span is scored, so an answer written only inside the thinking span earns
    nothing. Never raises on any completion string.
    """
    span = self.format.split(completion if isinstance(completion, str) else "")
    if span.answer is None:
      return 0.0
    return float(min(1.0, max(0.0, self.verify_answer(span.answer, example))))

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.options})"


def default_data_dir(data_dir: str | None) -> str:
  """`data_dir`, else $RLTHINK_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data_dir or os.environ.get(DEFAULT_DATA_DIR_ENV)
                            or "~/tensorflow_datasets")
