"""`rlthink bench train` and its shared pieces, at CPU-smoke size (the timings are not asserted)."""

import json
import math
import os
import time

import pytest

from rlthink.bench import common, hardware, train
from rlthink.models.presets import get_preset


@pytest.fixture(scope="module")
def quick_record(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "train.jsonl"
  assert train.main(["--quick", "--steps", "2", "--out", str(out)]) == 0
  lines = out.read_text().splitlines()
  assert len(lines) == 1
  return json.loads(lines[0])


def test_quick_run_writes_the_documented_record(quick_record):
  r = quick_record
  for key in ("bench", "model", "batch", "seq", "tokens_per_s", "mfu", "mfu_measured_peak",
              "step_ms", "torch_tokens_per_s", "torch_mfu", "ratio", "device", "jax_version",
              "peak_memory_gb"):
    assert key in r, key
  assert (r["bench"], r["model"], r["batch"], r["seq"]) == ("train", "tiny", 8, 64)
  assert r["platform"] == "cpu" and r["mfu"] is None  # no datasheet peak for a CPU
  assert r["tokens_per_s"] == pytest.approx(8 * 64 / (r["step_ms"] / 1e3))
  flops = get_preset("tiny").flops_per_token(64)
  assert r["mfu_measured_peak"] == pytest.approx(
      r["tokens_per_s"] * flops / r["num_devices"] / (r["measured_matmul_tflops"] * 1e12))
  assert r["ratio"] == pytest.approx(r["tokens_per_s"] / r["torch_tokens_per_s"])
  assert r["peak_memory_gb"] > 0


def test_quick_run_trains_both_sides(quick_record):
  r = quick_record
  # Random tokens: the first loss is about log(vocab); a few AdamW steps on one batch lower it.
  for side in ("", "torch_"):
    assert abs(r[f"{side}loss_first"] - math.log(512)) < 0.3
    assert r[f"{side}loss_last"] < r[f"{side}loss_first"] - 0.05
  # The transformers baseline has exactly the shape of our model.
  assert r["torch_num_params"] == r["num_params"] == get_preset("tiny").num_params


def test_peak_table_matches_device_kinds():
  assert hardware.device_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert hardware.device_peak_flops("NVIDIA H200") == 989e12
  assert hardware.device_peak_flops("NVIDIA H100 PCIe") == 756e12
  assert hardware.device_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert hardware.device_peak_flops("TPU v5 lite") == 197e12
  assert hardware.device_peak_flops("TPU v5p") == 459e12
  assert hardware.device_peak_flops("TPU v4") == 275e12
  assert hardware.device_peak_flops("cpu") is None


def test_measured_ceilings_are_finite_and_positive():
  flops = hardware.measure_matmul_flops("float32", n=128, chain=2, iters=3)
  bandwidth = hardware.measure_hbm_bandwidth(num_bytes=1 << 20, passes=2, iters=3)
  assert 1e6 < flops < 1e16 and 1e6 < bandwidth < 1e14


def test_time_fn_excludes_warmup_and_times_each_call():
  calls = []

  def fn(x):
    calls.append(x)
    time.sleep(0.01)
    return x

  times = common.time_fn(fn, 7, warmup=2, iters=3)
  assert len(times) == 3 and len(calls) == 5 and min(times) >= 0.01
  assert common.summarize([1.0, 3.0, 2.0])["median_s"] == 2.0


def test_emit_prints_and_appends(tmp_path, capsys):
  out = tmp_path / "sub" / "r.jsonl"
  common.emit({"a": 1}, str(out))
  common.emit({"a": 2.5}, str(out))
  assert [json.loads(l) for l in out.read_text().splitlines()] == [{"a": 1}, {"a": 2.5}]
  assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"a": 2.5}


def test_run_torch_subprocess_round_trip_and_failure(tmp_path):
  (tmp_path / "echo_child.py").write_text(
      "import os\nfrom rlthink.bench import common\n"
      "args = common.child_args()\n"
      "if args.get('fail'):\n  raise ValueError('child says no')\n"
      "common.child_result({'got': args, 'jax_platforms': os.environ['JAX_PLATFORMS']})\n")
  env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
  result = common.run_torch_subprocess("echo_child", {"x": [1, 2]}, env=env)
  assert result == {"got": {"x": [1, 2]}, "jax_platforms": "cpu"}
  with pytest.raises(RuntimeError, match=r"echo_child exited with status 1(.|\n)*child says no"):
    common.run_torch_subprocess("echo_child", {"fail": True}, env=env)


@pytest.mark.parametrize("preset", ["qwen2.5-1.5b", "qwen3-0.6b", "llama3.1-8b"])
def test_torch_baseline_has_the_presets_shape(preset):
  import dataclasses

  import torch
  import transformers

  from rlthink.bench.train_torch import hf_config

  config = get_preset(preset)
  with torch.device("meta"):  # shapes only, no memory
    model = transformers.AutoModelForCausalLM.from_config(hf_config(dataclasses.asdict(config)))
  assert sum(p.numel() for p in model.parameters()) == config.num_params
