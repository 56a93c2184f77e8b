"""Records (one dict per example) from local data files, for tasks over bring-your-own data.

Formats, by what the path is:
  *.jsonl             one JSON object per line (blank lines skipped).
  *.json              a JSON array of objects, or JSON lines (what `Dataset.to_json` writes).
  *.parquet           a parquet table, one record per row (read with pyarrow).
  a directory         saved by Hugging Face `Dataset.save_to_disk` (its `state.json` lists the
                      `data-*.arrow` files, Arrow IPC streams read with pyarrow: the `datasets`
                      package is not needed); a `DatasetDict.save_to_disk` directory holds one
                      such directory per split, named in its `dataset_dict.json`.
Every record comes with where it is ("train.jsonl:3", "test.parquet row 7") for error messages.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

EXTENSIONS = (".jsonl", ".json", ".parquet")
DATASET_STATE = "state.json"
DATASET_DICT = "dataset_dict.json"


def kind(path: str) -> str:
  """"jsonl", "json", "parquet", "dataset" or "dataset_dict"; ValueError naming the path else."""
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, DATASET_DICT)):
      return "dataset_dict"
    if os.path.isfile(os.path.join(path, DATASET_STATE)):
      return "dataset"
    raise ValueError(f"{path}: a directory without {DATASET_STATE} or {DATASET_DICT} (expected "
                     "one saved by Hugging Face Dataset.save_to_disk / DatasetDict.save_to_disk)")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  for ext in EXTENSIONS:
    if path.endswith(ext):
      return ext[1:]
  raise ValueError(f"{path}: unknown format; expected a file ending in {', '.join(EXTENSIONS)} or "
                   "a directory saved with Hugging Face datasets' save_to_disk")


def dataset_dict_splits(path: str) -> dict[str, str]:
  """{split: directory} of a `DatasetDict.save_to_disk` directory, in its saved order."""
  with open(os.path.join(path, DATASET_DICT), encoding="utf-8") as f:
    splits = json.load(f).get("splits")
  if not isinstance(splits, list) or not splits:
    raise ValueError(f"{os.path.join(path, DATASET_DICT)}: expected {{\"splits\": [names...]}}")
  return {str(split): os.path.join(path, str(split)) for split in splits}


def read(path: str) -> Iterator[tuple[str, dict]]:
  """(where, record) for every record of the file or `save_to_disk` directory at `path`."""
  reader = {"jsonl": _read_json_lines, "json": _read_json, "parquet": _read_parquet,
            "dataset": _read_dataset}.get(kind(path))
  if reader is None:
    raise ValueError(f"{path}: a DatasetDict directory holds several splits; name one of its "
                     f"split directories {sorted(dataset_dict_splits(path))}")
  for where, record in reader(path):
    if not isinstance(record, dict):
      raise ValueError(f"{where}: expected a JSON object (a record), got {type(record).__name__}")
    yield where, record


def _read_json_lines(path: str) -> Iterator[tuple[str, dict]]:
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{number}: not a JSON line ({e})") from e


def _read_json(path: str) -> Iterator[tuple[str, dict]]:
  with open(path, encoding="utf-8") as f:
    head = f.read(4096).lstrip()
  if not head.startswith("["):
    yield from _read_json_lines(path)
    return
  with open(path, encoding="utf-8") as f:
    try:
      rows = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  for index, row in enumerate(rows):
    yield f"{path} record {index}", row


def _pyarrow(path: str):
  try:
    import pyarrow as pa  # installed with tensorflow-datasets
    import pyarrow.parquet  # noqa: F401
  except ImportError as e:
    raise ImportError(f"{path}: reading parquet and save_to_disk data needs pyarrow "
                      "(pip install pyarrow)") from e
  return pa


def _rows(batches, path: str) -> Iterator[tuple[str, dict]]:
  index = 0
  for batch in batches:
    for row in batch.to_pylist():
      yield f"{path} row {index}", row
      index += 1


def _read_parquet(path: str) -> Iterator[tuple[str, dict]]:
  pa = _pyarrow(path)
  yield from _rows(pa.parquet.ParquetFile(path).iter_batches(batch_size=1024), path)


def _read_dataset(path: str) -> Iterator[tuple[str, dict]]:
  pa = _pyarrow(path)
  with open(os.path.join(path, DATASET_STATE), encoding="utf-8") as f:
    files = [entry["filename"] for entry in json.load(f).get("_data_files", [])]
  if not files:
    raise ValueError(f"{os.path.join(path, DATASET_STATE)}: lists no _data_files")
  for name in files:
    file = os.path.join(path, name)
    with pa.memory_map(file) as source:
      yield from _rows(pa.ipc.open_stream(source), file)


def content_hash(path: str) -> str:
  """sha256 hex of a file's bytes, or of every file under a directory (names and bytes)."""
  digest = hashlib.sha256()
  if os.path.isdir(path):
    files = sorted(os.path.relpath(os.path.join(root, name), path)
                   for root, _, names in os.walk(path) for name in names)
  else:
    files, path = [os.path.basename(path)], os.path.dirname(path)
  for name in files:
    digest.update(name.encode() + b"\0")
    with open(os.path.join(path, name), "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()
