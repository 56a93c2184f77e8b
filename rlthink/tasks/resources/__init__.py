"""Word lists shipped with the code, seeded random streams and nonsense-word generation.

The synthetic task families build their worlds only from these local files (no network): person
names, cities, universities... are one-entry-per-line `.txt` files in this folder; nonsense words
are generated from the syllable rules in `nonsense_syllables.txt`, never shipped as lists.
A researcher can swap any list for their own file through `overrides` ({list name: path}).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import pathlib
import random
import re
from typing import Iterable, Mapping

_PACKAGE = "rlthink.tasks.resources"


def list_names() -> tuple[str, ...]:
  """Names of the shipped word lists (file stems), sorted."""
  root = importlib.resources.files(_PACKAGE)
  return tuple(sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".txt")))


def _read_lines(text: str) -> tuple[str, ...]:
  """Non-empty, non-comment lines, stripped, in file order."""
  lines = (line.strip() for line in text.splitlines())
  return tuple(line for line in lines if line and not line.startswith("#"))


def load_words(name: str, overrides: Mapping[str, str] | None = None) -> tuple[str, ...]:
  """Returns the entries of word list `name` (one per line; '#' lines are comments).

  Args:
    name: a shipped list (see `list_names()`), e.g. "first_names".
    overrides: optional {list name: path to a local .txt file} replacing shipped lists.
  Raises:
    ValueError: unknown list name, missing or empty override file, or duplicate entries.
  """
  overrides = dict(overrides or {})
  if name in overrides:
    path = pathlib.Path(overrides[name])
    if not path.is_file():
      raise ValueError(f"word list override {name!r}: file {str(path)!r} does not exist")
    source, text = str(path), path.read_text(encoding="utf-8")
  else:
    resource = importlib.resources.files(_PACKAGE) / f"{name}.txt"
    if not resource.is_file():
      raise ValueError(f"unknown word list {name!r}; shipped lists: {', '.join(list_names())}")
    source, text = f"{_PACKAGE}/{name}.txt", resource.read_text(encoding="utf-8")
  words = _read_lines(text)
  if not words:
    raise ValueError(f"word list {name!r} ({source}) is empty")
  if len(set(words)) != len(words):
    dup = sorted({w for w in words if words.count(w) > 1})[:5]
    raise ValueError(f"word list {name!r} ({source}) has duplicate entries, e.g. {dup}")
  return words


def check_overrides(overrides: Mapping[str, str] | None, allowed: Iterable[str], option: str):
  """Validates an {list name: path} option: known names only, every file present."""
  allowed = set(allowed)
  for name, path in dict(overrides or {}).items():
    if name not in allowed:
      raise ValueError(f"option {option!r}: unknown word list {name!r}; expected one of "
                       f"{sorted(allowed)}")
    if not pathlib.Path(path).is_file():
      raise ValueError(f"option {option!r}: file for word list {name!r} not found: {str(path)!r}")


def rng_for(seed: int, *names: object) -> random.Random:
  """An independent `random.Random` stream for (seed, names...), stable across runs and platforms.

  Each part of a generator draws from its own stream, so changing one size option does not shift
  the random choices of unrelated parts.
  """
  key = ":".join([str(int(seed))] + [str(n) for n in names])
  return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


def stable_bit(seed: int, *names: object) -> int:
  """A deterministic pseudo-random 0/1 for (seed, names...), independent of call order."""
  key = ":".join([str(int(seed))] + [str(n) for n in names])
  return hashlib.sha256(key.encode()).digest()[0] & 1


def _syllable_rules() -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
  text = (importlib.resources.files(_PACKAGE) / "nonsense_syllables.txt").read_text("utf-8")
  slots, patterns = {}, ()
  for line in _read_lines(text):
    key, _, values = line.partition(":")
    if key.strip() == "patterns":
      patterns = tuple(values.split())
    else:
      slots[key.strip()] = tuple(values.split())
  for pattern in patterns:
    unknown = set(pattern) - set(slots)
    if unknown:
      raise ValueError(f"nonsense_syllables.txt: pattern {pattern!r} uses undefined slots "
                       f"{unknown}")
  return slots, patterns


class NonsenseWords:
  """Draws distinct pronounceable nonsense words (4-5 letters) from a seeded stream.

  Every word drawn from one instance is new, and never a word of `reserved` (English words, every
  word of the shipped lists - names, cities... - and any text the caller passes), so separate
  knowledge sets drawn from one instance share no words, and no nonsense word reads as a name.
  """

  def __init__(self, rng: random.Random, reserved: Iterable[str] = ()):
    self._rng = rng
    self._slots, self._patterns = _syllable_rules()
    texts = [line for name in list_names() if name != "nonsense_syllables"
             for line in load_words(name)]
    self._used = {w.lower() for text in [*texts, *reserved]
                  for w in re.findall(r"[^\W\d_]+", text)}

  def _one(self) -> str:
    pattern = self._rng.choice(self._patterns)
    return "".join(self._rng.choice(self._slots[slot]) for slot in pattern)

  def draw(self, count: int) -> list[str]:
    """Returns `count` new distinct words."""
    words = []
    misses = 0
    while len(words) < count:
      word = self._one()
      if len(word) not in (4, 5) or word in self._used:
        misses += 1
        if misses > 200 * (count + 10):
          raise ValueError(f"nonsense words exhausted after {len(self._used)} words; "
                           f"requested {count} more")
        continue
      self._used.add(word)
      words.append(word)
    return words
