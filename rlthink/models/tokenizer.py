"""Tokenizers: a built-in character-level one for the synthetic tasks, offline byte-level BPE
training for tasks with long texts, and loading a tokenizer from a local Hugging Face directory.
`experiment_tokenizer` picks one of them for an experiment, training a BPE tokenizer on the task's
corpus once and reusing the saved one on resume.

All of them are `transformers` fast tokenizers, so `save_pretrained` / `AutoTokenizer` work on them.
Neither built-in nor trained tokenizers add <bos>/<eos> on their own: `decode(encode(x)) == x`, and
callers add the special ids where their format wants them. The marker tokens (<think>, </think>,
<correct>, <incorrect>) are single tokens but not "special": `skip_special_tokens=True` keeps them,
because verifiers and the START span masks read them.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Iterable, Sequence

import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
THINK_START, THINK_END = "<think>", "</think>"
MARKERS = (THINK_START, THINK_END, "<correct>", "<incorrect>")
# Newline plus printable ASCII (space .. ~): the character set of the synthetic tasks.
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))
# Files that make a directory hold a tokenizer, and those that can actually build one.
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
TOKENIZER_FILES = VOCAB_FILES + ("tokenizer_config.json",)
# Written next to a tokenizer `experiment_tokenizer` trained: how it was trained, so a resumed run
# reuses it and a changed request is caught.
TRAINED_META = "rlthink_tokenizer.json"


def _wrap(tok: Tokenizer, special_tokens: Sequence[str]) -> transformers.PreTrainedTokenizerFast:
  """Registers specials (pad/bos/eos/unk when named) and markers, and wraps as a transformers
  fast tokenizer. Tokens of `special_tokens` other than pad/bos/eos/unk become non-special
  single tokens (kept by `skip_special_tokens=True`)."""
  specials = [t for t in special_tokens if t in SPECIAL_TOKENS]
  others = [t for t in special_tokens if t not in SPECIAL_TOKENS]
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
  tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in others])
  named = {f"{n}_token": t for n, t in zip(("pad", "bos", "eos", "unk"), SPECIAL_TOKENS)
           if t in specials}
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, clean_up_tokenization_spaces=False, **named)


def builtin_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """The character-level tokenizer of the synthetic tasks (104 tokens).

  Ids: <pad>=0, <bos>=1, <eos>=2, <unk>=3, then the markers <think>, </think>, <correct>,
  <incorrect> (4..7), then newline and printable ASCII, one token per character. Any other
  character becomes <unk>.
  """
  vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + MARKERS + tuple(CHARACTERS))}
  # BPE without merges = a lookup of single characters, with <unk> for the rest. No pre-tokenizer,
  # so spaces and newlines are ordinary characters; Fuse joins the pieces back without separators.
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
  tok.decoder = decoders.Fuse()
  return _wrap(tok, SPECIAL_TOKENS + MARKERS)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int,
                        special_tokens: Sequence[str] = SPECIAL_TOKENS + MARKERS
                        ) -> transformers.PreTrainedTokenizerFast:
  """Trains a byte-level BPE tokenizer on `texts` (offline; every string round-trips).

  Args:
    texts: the training corpus (any iterable of strings).
    vocab_size: total size including the 256 byte tokens and `special_tokens`.
    special_tokens: reserved single tokens with ids 0..n-1; <pad>/<bos>/<eos>/<unk> among them set
      the tokenizer's pad/bos/eos/unk tokens, the others are non-special markers.
  """
  special_tokens = tuple(special_tokens)
  minimum = 256 + len(special_tokens)
  if vocab_size < minimum:
    raise ValueError(f"vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
                     f"{minimum} (256 bytes + {len(special_tokens)} special tokens)")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return _wrap(tok, special_tokens)


def has_tokenizer_files(path: str | os.PathLike) -> bool:
  """True when the directory holds any tokenizer file (see `TOKENIZER_FILES`)."""
  return any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)


def load_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerBase:
  """Loads the tokenizer of a local Hugging Face directory (never touches the network).

  Raises:
    FileNotFoundError: the directory is missing or holds none of `VOCAB_FILES`.
    ValueError: the files are there but transformers cannot build a tokenizer from them.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"tokenizer directory {path} does not exist")
  if not any(os.path.isfile(os.path.join(path, f)) for f in VOCAB_FILES):
    raise FileNotFoundError(f"{path} has no tokenizer: expected one of {', '.join(VOCAB_FILES)}")
  present = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(path, f))]
  try:
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
  except Exception as e:  # transformers raises many types; one message naming the files instead
    raise ValueError(f"could not load the tokenizer in {path} (files: {', '.join(present)}): "
                     f"{type(e).__name__}: {e}") from e


def experiment_tokenizer(spec: str | None, corpus_fn: Callable[[], Iterable[str]] | None = None,
                         directory: str | None = None, vocab_size: int | None = None
                         ) -> transformers.PreTrainedTokenizerBase | None:
  """The tokenizer an experiment asks for.

  spec: None (the model's own: returns None), "builtin" (`builtin_tokenizer`), "bpe" (byte-level
    BPE trained on the task's own corpus) or a local directory holding a tokenizer.
  corpus_fn: () -> texts to train "bpe" on (e.g. the training prompts and completions); called
    only when training.
  directory: where "bpe" is saved (e.g. <workdir>/tokenizer). A later call loads the saved one and
    never retrains (resume); one trained for another vocab_size is an error naming both.
  vocab_size: the BPE vocabulary size (required for "bpe").
  """
  if spec is None:
    return None
  if spec == "builtin":
    return builtin_tokenizer()
  if spec == "bpe":
    if directory is None or vocab_size is None:
      raise ValueError(f"tokenizer 'bpe' needs a directory to save it in and a vocab_size, got "
                       f"directory={directory!r}, vocab_size={vocab_size!r}")
    return _trained_bpe(corpus_fn, os.fspath(directory), int(vocab_size))
  if os.path.isdir(spec):
    return load_tokenizer(spec)
  raise ValueError(f"tokenizer {spec!r}: expected None (the model's own), 'builtin', 'bpe' or a "
                   "local directory holding a tokenizer")


def _trained_bpe(corpus_fn, directory: str,
                 vocab_size: int) -> transformers.PreTrainedTokenizerBase:
  """Loads the BPE tokenizer saved in `directory`, or trains and saves it (atomically: a killed
  run leaves no half-written tokenizer behind)."""
  meta_path = os.path.join(directory, TRAINED_META)
  if os.path.isfile(meta_path):
    with open(meta_path) as f:
      saved = json.load(f)
    if saved.get("vocab_size") != vocab_size:
      raise ValueError(f"{directory} holds a BPE tokenizer trained with vocab_size="
                       f"{saved.get('vocab_size')}, but vocab_size={vocab_size} is asked; ask for "
                       f"{saved.get('vocab_size')} or remove {directory} to train a new one")
    return load_tokenizer(directory)
  if os.path.isdir(directory) and os.listdir(directory):
    raise ValueError(f"{directory} is not empty but holds no tokenizer trained by rlthink "
                     f"({TRAINED_META} is missing); remove it or point the tokenizer elsewhere")
  if corpus_fn is None:
    raise ValueError(f"tokenizer 'bpe': nothing saved in {directory} and no corpus to train on")
  tok = train_bpe_tokenizer(corpus_fn(), vocab_size)
  tmp = f"{directory}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  tok.save_pretrained(tmp)
  with open(os.path.join(tmp, TRAINED_META), "w") as f:
    json.dump({"kind": "bpe", "vocab_size": vocab_size, "size": len(tok)}, f)
  if os.path.isdir(directory):
    os.rmdir(directory)  # empty (checked above): rename needs the name free
  os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
  os.replace(tmp, directory)
  return load_tokenizer(directory)
