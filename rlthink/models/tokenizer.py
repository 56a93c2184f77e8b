"""Tokenizers: a built-in character-level one for the synthetic tasks, offline byte-level BPE
training for tasks with long texts, and loading a tokenizer from a local Hugging Face directory.

All of them are `transformers` fast tokenizers, so `save_pretrained` / `AutoTokenizer` work on them.
Neither built-in nor trained tokenizers add <bos>/<eos> on their own: `decode(encode(x)) == x`, and
callers add the special ids where their format wants them. The marker tokens (<think>, </think>,
<correct>, <incorrect>) are single tokens but not "special": `skip_special_tokens=True` keeps them,
because verifiers and the START span masks read them.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

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
