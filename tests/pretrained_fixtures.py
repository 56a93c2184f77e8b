"""A tiny pretrained-style model directory made offline: a random Qwen2 saved by transformers,
with a byte-level BPE tokenizer trained on the test's own texts, Qwen's special tokens and a
ChatML chat template, and two eos ids (<|im_end|>, <|endoftext|>) as Qwen2.5 instruct has."""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
TEXTS = ("Tom has 3 apples. He buys 4 more. How many apples does he have? 3+4=7 #### 7",
         "A book costs 12 dollars. How much do 2 books cost? 12*2=24 #### 24")


def chat_tokenizer(texts=TEXTS, vocab_size: int = 320) -> transformers.PreTrainedTokenizerFast:
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(list(texts), trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                              pad_token="<|endoftext|>",
                                              clean_up_tokenization_spaces=False)
  fast.chat_template = CHAT_TEMPLATE
  return fast


def save_chat_model(path, texts=TEXTS, vocab_size: int = 320, seed: int = 0, **config):
  """Writes the model and tokenizer to `path`; returns the tokenizer."""
  tok = chat_tokenizer(texts, vocab_size)
  ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
  hf_config = transformers.Qwen2Config(**{
      **dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
             tie_word_embeddings=True, bos_token_id=None, pad_token_id=ids["<|endoftext|>"],
             eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]]), **config})
  torch.manual_seed(seed)
  transformers.Qwen2ForCausalLM(hf_config).save_pretrained(str(path))
  tok.save_pretrained(str(path))
  return tok
