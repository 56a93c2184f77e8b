"""TFDS builders for task families: array_record files, deterministic, versioned, per option set.

Each task family gets one registered `GeneratorBasedBuilder` named "rlthink_<task name>" whose
version is the task's `version`. Every option set is a `TaskBuilderConfig` named by
`Task.config_name` (size, seed and a hash of all data options), so datasets with different options
never collide on disk: `<data_dir>/rlthink_<name>/<config_name>/<version>/`. The examples come from
`Task.generate` in its order and TFDS orders them by a hash of their keys (the example ids), so the
same options give byte-identical files. Read back with `data_source(task, split)` or, knowing the
names, `tfds.data_source("rlthink_<name>/<config_name>:<version>", data_dir=...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from rlthink import locks
from rlthink.tasks.base import Task, default_data_dir


def _feature(kind: str):
  return {
      "text": tfds.features.Text(),
      "int": np.int64,
      "float": tfds.features.Tensor(shape=(), dtype=np.float64,
                                    encoding=tfds.features.Encoding.BYTES),  # exact float64
      "bool": np.bool_,
      "text_list": tfds.features.Sequence(tfds.features.Text()),
      "int_list": tfds.features.Sequence(np.int64),
      "json": tfds.features.Text(),
  }[kind]


def encode_example(example: dict, features: dict[str, str]) -> dict:
  """A task example as the TFDS feature dict (json fields serialized with sorted keys)."""
  missing = set(features) - set(example)
  extra = set(example) - set(features)
  if missing or extra:
    raise ValueError(f"example {example.get('id')!r}: fields missing {sorted(missing)}, "
                     f"undeclared {sorted(extra)} (declare them in the task's `features`)")
  return {k: json.dumps(example[k], sort_keys=True) if kind == "json" else example[k]
          for k, kind in features.items()}


def decode_example(record: dict, features: dict[str, str]) -> dict:
  """A TFDS record (bytes, numpy scalars) back into the plain-Python example `generate` yielded."""
  out = {}
  for key, kind in features.items():
    value = record[key]
    if kind == "text":
      out[key] = value.decode("utf-8")
    elif kind == "json":
      out[key] = json.loads(value.decode("utf-8"))
    elif kind == "text_list":
      out[key] = [v.decode("utf-8") for v in value]
    elif kind == "int_list":
      out[key] = [int(v) for v in value]
    else:
      out[key] = {"int": int, "float": float, "bool": bool}[kind](value)
  return out


@dataclasses.dataclass
class TaskBuilderConfig(tfds.core.BuilderConfig):
  """One option set of a task family; `task` generates its examples."""

  task: Any = None


class TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes a `Task`'s splits; concrete per-family subclasses come from `builder_class`."""

  task_cls: type[Task]

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({k: _feature(v)
                                           for k, v in self.task_cls.features.items()})
    return tfds.core.DatasetInfo(builder=self, description=self.task_cls.__doc__,
                                 features=features, supervised_keys=None)

  def _split_generators(self, dl_manager) -> dict:
    del dl_manager  # task families read local files themselves, with their own errors
    task = self.builder_config.task  # its splits: a family over the user's files has its own
    return {split: self._generate_examples(split) for split in task.splits}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    task = self.builder_config.task
    for example in task.generate(split):
      yield str(example["id"]), encode_example(example, task.features)

  # TFDS prints a bold "Downloading and preparing dataset ..." banner before and a "... downloaded
  # and prepared" line after every build; nothing is downloaded here and each run builds several
  # small datasets, so both go to the debug log instead.
  def _log_download_bytes(self) -> None:
    logging.getLogger(__name__).debug("building %s into %s", self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.getLogger(__name__).debug("built %s in %s", self.name, self.data_dir)


class _CustomConfigFilter(logging.Filter):
  """Drops TFDS's "Using custom data configuration" warning (every task option set is a custom
  config by design, one warning per builder made) and its "Variant folder ... has no
  dataset_info.json" for rlthink's own datasets (TFDS scans the version folder its build is
  still writing); every other absl record passes."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = str(record.msg)
    if message.startswith("Using custom data configuration"):
      return False
    return not (message.startswith("Variant folder") and record.args
                and f"{os.sep}rlthink_" in str(record.args[0]))


def _quiet_custom_config_warning() -> None:
  absl = logging.getLogger("absl")  # the logger absl.logging (and so TFDS) writes to
  if not any(isinstance(f, _CustomConfigFilter) for f in absl.filters):
    absl.addFilter(_CustomConfigFilter())


@functools.cache
def builder_class(task_cls: type[Task]) -> type[TaskBuilder]:
  """The registered TFDS builder class of a task family (created once per family)."""
  return type(f"Rlthink_{task_cls.name}", (TaskBuilder,), {
      "name": f"rlthink_{task_cls.name}",
      "VERSION": tfds.core.Version(task_cls.version),
      "task_cls": task_cls,
      "__module__": task_cls.__module__,
  })


def make_builder(task: Task, data_dir: str | None = None) -> TaskBuilder:
  """The (not yet prepared) builder for `task` under `data_dir` (default: `task.data_dir`...)."""
  config = TaskBuilderConfig(name=task.config_name, version=task.version,
                             description=repr(task.options), task=task)
  _quiet_custom_config_warning()
  return builder_class(type(task))(config=config, file_format="array_record",
                                   data_dir=default_data_dir(data_dir or task.data_dir))


def build(task: Task, data_dir: str | None = None) -> TaskBuilder:
  """Builds (once; later calls reuse the files) and returns the prepared builder.

  Concurrent builds of one dataset (two runs sharing a data_dir) take turns on a lock file beside
  it: the second waits for the first (logging who holds it), then reuses its files.
  """
  builder = make_builder(task, data_dir)
  if builder.is_prepared():
    return builder
  root = os.path.join(default_data_dir(data_dir or task.data_dir), builder.name)
  lock = os.path.join(root, f".{task.config_name}-{builder.version}.lock")
  with locks.dataset_build_lock(lock, f"{builder.name}/{task.config_name}:{builder.version}"):
    builder = make_builder(task, data_dir)  # the other builder may have finished meanwhile
    if not builder.is_prepared():
      tfds.display_progress_bar(False)
      with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; keep stdout clean
        builder.download_and_prepare()
  return builder


class ExampleSource(Sequence):
  """Random access to one split as plain-Python example dicts (what grain reads)."""

  def __init__(self, source, features: dict[str, str]):
    self._source, self._features = source, features

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    if not -len(self) <= index < len(self):
      raise IndexError(f"example index {index} out of range for {len(self)} examples")
    return decode_example(self._source[index % len(self)], self._features)

  def __repr__(self) -> str:
    return f"ExampleSource({self._source!r}, {len(self)} examples)"


def data_source(task: Task, split: str, data_dir: str | None = None) -> ExampleSource:
  """The examples of `split`, building the dataset first when it is not on disk."""
  builder = build(task, data_dir)
  return ExampleSource(builder.as_data_source(split=task.check_split(split)), task.features)


def statistics(task: Task, data_dir: str | None = None) -> dict:
  """Builds the dataset and returns where it is and how many examples each split holds."""
  builder = build(task, data_dir)
  splits = builder.info.splits
  return {
      "name": builder.name,
      "config": task.config_name,
      "version": str(builder.version),
      "path": str(builder.data_dir),
      "options": dataclasses.asdict(task.options),
      "examples": {split: int(splits[split].num_examples) for split in task.splits},
      "bytes": {split: int(splits[split].num_bytes) for split in task.splits},
  }
