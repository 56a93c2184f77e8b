"""`rlthink bench grpo --quick`: runs where gin, TFDS, grain and tensorboardX are missing (the
accelerator image), times every phase of one GRPO iteration, and says why tunix did not run when
it is not installed."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from rlthink.bench import grpo

_CHILD = """
import sys
for name in ("gin", "tensorflow_datasets", "grain", "tensorboardX"):
  sys.modules[name] = None  # import raises ImportError
from rlthink.bench import grpo
sys.exit(grpo.main(["--quick", "--old_logprobs", "forward", "--sample_chunks", "2",
                    "--systems", "rlthink", "tunix", "--out", sys.argv[1]]))
"""


@pytest.fixture(scope="module")
def record(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench_grpo") / "grpo.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device: quicker
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(out)], capture_output=True, text=True,
                        env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = out.read_text().splitlines()
  assert len(lines) == 1
  return json.loads(lines[0])


def test_quick_run_times_each_phase_of_the_iteration(record):
  r = record
  assert (r["bench"], r["model"], r["rows"], r["new_tokens"]) == ("grpo", "tiny-qwen2", 8, 8)
  phases = [r[f"rlthink_{p}_s"] for p in grpo.PHASES]
  assert all(t >= 0 for t in phases)
  assert r["rlthink_total_s"] == pytest.approx(sum(phases))
  assert r["rlthink_old_logprobs_s"] > 0  # --old_logprobs forward ran the scoring forward
  assert r["rlthink_first_total_s"] > r["rlthink_total_s"]  # the first iteration compiled
  assert r["rlthink_grad_norm"] >= 0 and "rlthink_error" not in r


def test_tunix_is_run_or_its_absence_explained(record):
  if importlib.util.find_spec("tunix") is None:
    assert "not installed" in record["tunix_skipped"]
    assert record["speedup_total"] is None
  elif "tunix_skipped" in record:  # installed, but its import chain needs tensorboardX (blocked)
    assert "does not import" in record["tunix_skipped"]
  else:
    assert record["tunix_total_s"] > 0, record.get("tunix_error")
    assert record["speedup_total"] == pytest.approx(record["tunix_total_s"] /
                                                    record["rlthink_total_s"])
