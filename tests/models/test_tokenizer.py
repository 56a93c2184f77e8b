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


def test_experiment_tokenizer_trains_once_and_reuses_the_saved_one(tmp_path):
  rng = random.Random(1)
  words = ["premise", "therefore", "answer", "because", "sum"]
  texts = [" ".join(rng.choice(words) for _ in range(12)) + f" {i}" for i in range(200)]
  calls = []

  def corpus():
    calls.append(1)
    return iter(texts)

  directory = tmp_path / "run" / "tokenizer"
  tok = tk.experiment_tokenizer("bpe", corpus, str(directory), vocab_size=300)
  assert calls == [1] and tk.has_tokenizer_files(directory)
  reference = tk.train_bpe_tokenizer(texts, vocab_size=300)  # the same training, apart
  for text in texts[:5] + ["unseen <think>x</think> 42"]:
    assert tok.encode(text) == reference.encode(text)
    assert tok.decode(tok.encode(text)) == text
  assert (tok.pad_token_id, tok.eos_token_id, len(tok)) == (0, 2, len(reference))

  def no_corpus():
    raise AssertionError("a saved tokenizer is never retrained")

  again = tk.experiment_tokenizer("bpe", no_corpus, str(directory), vocab_size=300)
  assert again.encode(texts[0]) == tok.encode(texts[0]) and len(again) == len(tok)
  with pytest.raises(ValueError, match=r"trained with vocab_size=300, but vocab_size=320"):
    tk.experiment_tokenizer("bpe", corpus, str(directory), vocab_size=320)
  assert calls == [1]


def test_experiment_tokenizer_specs(tmp_path):
  assert tk.experiment_tokenizer(None) is None  # the model's own
  assert tk.experiment_tokenizer("builtin").encode("<think>a") == [4, tk.CHARACTERS.index("a") + 8]
  tk.builtin_tokenizer().save_pretrained(tmp_path / "hf")
  assert len(tk.experiment_tokenizer(str(tmp_path / "hf"))) == len(tk.builtin_tokenizer())
  with pytest.raises(ValueError, match="tokenizer 'sentencepiece': expected None"):
    tk.experiment_tokenizer("sentencepiece")
  with pytest.raises(ValueError, match="needs a directory to save it in and a vocab_size"):
    tk.experiment_tokenizer("bpe", lambda: ["a"], None, 300)
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="busy is not empty but holds no tokenizer trained"):
    tk.experiment_tokenizer("bpe", lambda: ["a b"], str(tmp_path / "busy"), 300)
