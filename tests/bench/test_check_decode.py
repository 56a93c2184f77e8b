"""`rlthink bench check_decode` on CPU (the kernels in Pallas' interpreter): it passes on the
committed kernels and fails on a broken one."""

import json

import jax.numpy as jnp

from rlthink.bench import check_decode
from rlthink.models import decode_attention, decode_matvec


def test_passes_on_the_committed_kernels(tmp_path):
  out = tmp_path / "check.jsonl"
  min_size = dict(decode_matvec.KERNEL_MIN_SIZE)
  code = check_decode.main(["--dtype", "float32", "--batch", "1", "--new_tokens", "6",
                            "--every_kernel", "--out", str(out)])
  (record,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert code == 0 and record["ok"] and record["every_kernel"]
  assert record["equal_tokens"] == 1.0 and record["max_logprob_gap"] < 1e-4
  assert decode_matvec.KERNEL_MIN_SIZE == min_size  # the override does not leak


def test_fails_on_a_kernel_that_drops_the_attention(monkeypatch, capsys):
  real = decode_attention.decode_attention

  def broken(*args, **kwargs):
    result = real(*args, **kwargs)
    if isinstance(result, tuple):  # (out, k, v) with write_kv
      return (jnp.zeros_like(result[0]),) + tuple(result[1:])
    return jnp.zeros_like(result)

  monkeypatch.setattr(decode_attention, "decode_attention", broken)
  # 5 new tokens: a program not traced before, so the broken kernel is the one compiled.
  assert check_decode.main(["--dtype", "float32", "--batch", "1", "--new_tokens", "5"]) == 1
  record = json.loads(capsys.readouterr().out.splitlines()[-1])
  assert not record["ok"] and record["equal_tokens"] < check_decode.MIN_EQUAL["float32"]
