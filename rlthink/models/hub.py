"""Where a model named by `ModelSpec.hf_path` (or `rlthink sample --model`) lives on disk: a local
directory as it is, a Hugging Face Hub id ("Qwen/Qwen2.5-1.5B-Instruct") through the standard
Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).

Nothing here touches the network: a Hub id must already be in the cache (`hf download ID`, on a
machine with network; copy the cache or point HF_HUB_CACHE at it), else the error says so in one
line.
"""

from __future__ import annotations

import os
import re

from huggingface_hub import constants, snapshot_download

# owner/name or a bare name, as the Hub spells them (no path separators beyond the one slash).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _cache_dir() -> str:
  """The Hub cache as huggingface_hub would pick it now (it reads the variables at import)."""
  if os.environ.get("HF_HUB_CACHE"):
    return os.environ["HF_HUB_CACHE"]
  if os.environ.get("HF_HOME"):
    return os.path.join(os.environ["HF_HOME"], "hub")
  return constants.HF_HUB_CACHE


def is_hub_id(name: str) -> bool:
  """Whether `name` reads as a Hub id rather than a path (it may still be a local directory)."""
  return bool(_HUB_ID.match(name)) and not name.startswith((".", "~"))


def resolve_model_dir(name: str | os.PathLike) -> str:
  """The local directory of a model: `name` itself when it is a directory, else the cached
  snapshot of the Hub id `name`.

  Raises FileNotFoundError in one line saying what to do: a missing directory, or a Hub id that
  is not in the cache (download it with `hf download ID` on a machine with network, or pass a
  local directory).
  """
  name = os.fspath(name)
  path = os.path.expanduser(name)
  if os.path.isdir(path):
    return path
  if not is_hub_id(name):
    raise FileNotFoundError(f"model directory {name} does not exist (no config.json there)")
  cache = _cache_dir()
  try:
    return snapshot_download(name, cache_dir=cache, local_files_only=True)
  except Exception:  # LocalEntryNotFoundError, or a broken cache entry: the same advice
    raise FileNotFoundError(
        f"model {name!r} is neither a local directory nor in the Hugging Face cache {cache}; "
        f"download it on a machine with network (`hf download {name}`, or `huggingface-cli "
        f"download {name}` with older huggingface_hub) and copy the cache here or set "
        "HF_HUB_CACHE, or pass a local directory") from None
