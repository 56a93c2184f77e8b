"""Tokenizers: the built-in character tokenizer, offline BPE training, loading from a directory."""

import random

import pytest
import transformers

from rlthink.models import tokenizer as tk
from rlthink.models.presets import get_preset


def _random_text(rng, n):
  return "".join(rng.choice(tk.CHARACTERS) for _ in range(n))  # newline + printable ASCII


def test_builtin_tokenizer_ids_and_vocab():
  tok = tk.builtin_tokenizer()
  assert len(tok) == 8 + 96 < get_preset("tiny").vocab_size
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  assert [tok.convert_tokens_to_ids(m) for m in tk.MARKERS] == [4, 5, 6, 7]
  # One token per character, each marker one token, no automatic <bos>/<eos>.
  assert len(tok.encode("ab c\n")) == 5
  ids = tok.encode("x<think>y</think><correct>")
  assert ids[1] == 4 and ids[3] == 5 and ids[4] == 6 and len(ids) == 5
  assert tok.encode("é") == [tok.unk_token_id]


def test_builtin_tokenizer_round_trips_printable_ascii():
  tok = tk.builtin_tokenizer()
  rng = random.Random(0)
  texts = [tk.CHARACTERS, "  leading and trailing  ", "a\n\nb",
           "Q: 3 + 4 = ?\nA: <think>3+4=7</think> 7"]
  texts += [_random_text(rng, rng.randint(0, 80)) for _ in range(50)]
  for text in texts:
    assert tok.decode(tok.encode(text)) == text
  # skip_special_tokens drops pad/bos/eos but keeps the markers that verifiers read.
  ids = [tok.bos_token_id] + tok.encode("<think>1</think>2") + [tok.eos_token_id, tok.pad_token_id]
  assert tok.decode(ids, skip_special_tokens=True) == "<think>1</think>2"


def test_builtin_tokenizer_saves_and_loads_with_auto_tokenizer(tmp_path):
  tok = tk.builtin_tokenizer()
  tok.save_pretrained(tmp_path)
  text = "Is 12 > 7? <think>yes</think>\n<correct>~`|{}"
  for loaded in (transformers.AutoTokenizer.from_pretrained(tmp_path), tk.load_tokenizer(tmp_path)):
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.decode(tok.encode(text)) == text
    assert (loaded.pad_token_id, loaded.eos_token_id, len(loaded)) == (0, 2, len(tok))
    batch = loaded(["ab", "abcd"], padding=True)["input_ids"]
    assert batch[0][2:] == [0, 0]


def test_train_bpe_tokenizer(tmp_path):
  rng = random.Random(0)
  words = ["alpha", "beta", "gamma", "delta", "reasoning", "answer", "therefore"]
  texts = [" ".join(rng.choice(words) for _ in range(20)) + f" {i}" for i in range(300)]
  tok = tk.train_bpe_tokenizer(texts, vocab_size=320)
  assert len(tok) <= 320
  assert [tok.convert_tokens_to_ids(t) for t in tk.SPECIAL_TOKENS + tk.MARKERS] == list(range(8))
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
  sample = texts[0]
  assert len(tok.encode(sample)) < len(sample.encode()) / 2  # merges learned from the corpus
  for text in (sample, "unseen ünïcödé 🦊 text\n\ttabs", "<think>a</think> b"):
    assert tok.decode(tok.encode(text)) == text  # byte level: nothing is unknown
  assert tok.encode("<think>")[0] == 4 and len(tok.encode("<think>")) == 1
  tok.save_pretrained(tmp_path)
  assert transformers.AutoTokenizer.from_pretrained(tmp_path).encode(sample) == tok.encode(sample)
  with pytest.raises(ValueError, match="vocab_size=100 is too small"):
    tk.train_bpe_tokenizer(texts, vocab_size=100)


def test_load_tokenizer_errors_name_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tk.load_tokenizer(tmp_path / "missing")
  (tmp_path / "tokenizer_config.json").write_text("{}")
  assert tk.has_tokenizer_files(tmp_path)
  with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no tokenizer: expected one of "
                                              "tokenizer.json, tokenizer.model"):
    tk.load_tokenizer(tmp_path)
  (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
  with pytest.raises(ValueError, match=f"could not load the tokenizer in {tmp_path} "
                                       r"\(files: tokenizer.json, tokenizer_config.json\)"):
    tk.load_tokenizer(tmp_path)
