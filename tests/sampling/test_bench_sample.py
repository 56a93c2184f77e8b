"""`rlthink bench sample` at CPU-smoke size: the record's shape and arithmetic (not the speed)."""

import json
import subprocess
import sys

import pytest

from rlthink.bench import sample as bench_sample
from rlthink.models.presets import get_preset


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "sample.jsonl"
  # matvec.o=xla: a decode setting that is also the default, so the run is the default one.
  argv = ["--quick", "--batch", "1", "3", "--prompt_len", "8", "--new_tokens", "4", "--out",
          str(out), "--decode_setting", "matvec.o=xla"]
  assert bench_sample.main(argv) == 0
  return [json.loads(line) for line in out.read_text().splitlines()]


def test_quick_run_writes_one_documented_record_per_case(records):
  assert [r["batch"] for r in records] == [1, 3]
  for r in records:
    for key in ("bench", "model", "batch", "prompt_len", "new_tokens", "rlthink_tok_s",
                "torch_tok_s", "ratio", "floor_tok_s", "pct_floor", "device", "jax_version"):
      assert key in r, key
    assert (r["bench"], r["model"], r["prompt_len"], r["new_tokens"]) == ("sample", "tiny", 8, 4)
    assert r["rlthink_tok_s"] == pytest.approx(r["batch"] * 4 / r["rlthink_median_s"])
    assert r["torch_tok_s"] > 0, r.get("torch_error")
    assert r["ratio"] == pytest.approx(r["rlthink_tok_s"] / r["torch_tok_s"])
    assert r["pct_floor"] == pytest.approx(100 * r["rlthink_tok_s"] / r["floor_tok_s"])
    assert r["platform"] == "cpu" and r["decode_settings"] == ["matvec.o=xla"]


def test_floor_counts_weights_and_kv_bytes_per_step():
  # The anchor of DESIGN.md: qwen2.5-0.5b, batch 256, 128 + 256 tokens at 2.65 TB/s is a
  # memory-bound floor of about 376k tokens/s.
  config = get_preset("qwen2.5-0.5b", dtype="bfloat16")
  f = bench_sample.floor(config, 256, 128, 256, 2.65e12, 700e12)
  assert f["floor_bound"] == "memory"
  assert f["floor_tok_s"] == pytest.approx(376e3, rel=0.02)
  # Batch 1: 256 + 1 passes over the bf16 matmul weights (all but the norm scales), and the
  # keys/values of 128 + t tokens at step t (2 * 24 layers * 2 kv heads * 64 * 2 bytes each).
  one = bench_sample.floor(config, 1, 128, 256, 2.65e12, 700e12)
  matmul_params = config.num_params - 896 * (2 * 24 + 1)
  kv_reads = sum(128 + t for t in range(256)) * 2 * 24 * 2 * 64 * 2
  assert one["floor_bytes"] == 257 * 2 * matmul_params + kv_reads


def test_sampling_path_imports_only_what_the_accelerator_image_has():
  code = ("import sys, rlthink.bench.sample, rlthink.bench.sample_torch, rlthink.sampling; "
          "from rlthink.sampling import engine, sampler; "
          "print([m for m in ('gin', 'tensorflow_datasets', 'grain', 'tensorboardX') "
          "if m in sys.modules])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_breakdown_reports_every_part_of_a_decode_step():
  import argparse

  import rlthink
  from rlthink.bench import sample_breakdown

  policy = rlthink.init_policy("tiny", seed=0, dtype="bfloat16", num_layers=2)
  args = argparse.Namespace(prompt_len=8, new_tokens=8, temperature=1.0)
  out = sample_breakdown.breakdown(policy, 2, args, unroll=True, hbm_bytes_per_s=1e10)
  for part in ("decode_step", "forward", "trunk", "trunk_short", "sampling", "weights_floor",
               "kv_floor"):
    assert f"breakdown_{part}_ms" in out, part
  assert all(v > 0 for k, v in out.items() if k != "breakdown_decode_step_ms")
  assert out["breakdown_kv_floor_ms"] == pytest.approx(
      1e3 * 2 * 15 * (2 * 2 * 2 * 32 * 2) / 1e10)  # rows * slots * bf16 k+v bytes per token
