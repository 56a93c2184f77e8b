"""`rlthink bench rollout`: its long-tail workload, and a --quick run where gin, TFDS, grain and
tensorboardX are missing (the accelerator image) that reports every system on the same work."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rlthink.bench import rollout

_CHILD = """
import sys
for name in ("gin", "tensorflow_datasets", "grain", "tensorboardX"):
  sys.modules[name] = None  # import raises ImportError
from rlthink.bench import rollout
sys.exit(rollout.main(["--quick", "--requests", "32", "--max_new_tokens", "24",
                       "--prompt_len", "8", "--out", sys.argv[1]]))
"""


def test_workload_lengths_are_long_tailed_with_the_asked_mean():
  work = rollout.workload(vocab=1000, requests=20000, samples=4, prompt_len=5, cap=1024,
                          mean_frac=0.25, sigma=1.0, seed=0)
  lengths = work.lengths
  assert lengths.shape == (20000,) and work.prompts.shape == (5000, 5)
  assert lengths.min() >= 1 and lengths.max() == 1024
  assert abs(lengths.mean() - 256) < 8                 # E[L] = 0.25 * 1024
  assert np.median(lengths) < 0.7 * lengths.mean()     # a long right tail
  assert 0.01 < np.mean(lengths == 1024) < 0.06        # a few rows run to the cap
  again = rollout.workload(1000, 20000, 4, 5, 1024, 0.25, 1.0, seed=0)
  np.testing.assert_array_equal(again.lengths, lengths)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench_rollout") / "rollout.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device: quicker
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(out)], capture_output=True, text=True,
                        env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = out.read_text().splitlines()
  assert len(lines) == 1
  return json.loads(lines[0])


def test_quick_run_times_every_system_on_the_same_useful_tokens(record):
  r = record
  assert (r["bench"], r["model"], r["slots"], r["requests"]) == ("rollout", "tiny", 8, 32)
  work = rollout.workload(512, 32, 4, 8, 24, 0.25, 1.0, seed=0)
  assert r["useful_tokens"] == int(work.lengths.sum())
  for system in ("continuous", "static"):
    assert r[f"{system}_tok_s"] == pytest.approx(r["useful_tokens"] / r[f"{system}_s"])
    assert 0 < r[f"{system}_slot_use"] <= 1
    assert r[f"{system}_steps"] >= r["ideal_steps"]
  # Refilled slots run fewer steps than batches that wait for their longest row.
  assert r["continuous_steps"] < r["static_steps"]
  assert r["static_calls"] == 4
  assert r["continuous_vs_static"] == pytest.approx(r["continuous_tok_s"] / r["static_tok_s"])
  # The transformers baseline ran one batch of 8 requests (the first 8 of the workload).
  assert r["torch_tok_s"] > 0, r.get("torch_error")
  assert r["torch_useful_tokens"] == int(work.lengths[:8].sum())
