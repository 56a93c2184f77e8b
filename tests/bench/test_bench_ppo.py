"""`rlthink bench ppo --quick`: runs where gin, TFDS, grain and tensorboardX are missing (the
accelerator image) and reports every phase of the iteration."""

import json
import os
import subprocess
import sys

import pytest

# Makes the modules the accelerator image lacks unimportable, then runs the benchmark.
_CHILD = """
import sys
for name in ("gin", "tensorflow_datasets", "grain", "tensorboardX"):
  sys.modules[name] = None  # import raises ImportError
from rlthink.bench import ppo
code = ppo.main(["--quick", "--iterations", "1", "--out", sys.argv[1]])
print("LOADED", sorted(m for m in ("gin", "tensorflow_datasets", "grain", "tensorboardX")
                       if sys.modules.get(m) is not None))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def record(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench_ppo") / "ppo.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device: quicker
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(out)], capture_output=True, text=True,
                        env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "LOADED []" in proc.stdout
  lines = out.read_text().splitlines()
  assert len(lines) == 1
  return json.loads(lines[0])


def test_quick_run_reports_each_phase(record):
  r = record
  assert (r["bench"], r["model"], r["prompts"], r["new_tokens"], r["epochs"]) == (
      "ppo", "tiny", 8, 16, 2)
  phases = ["time_rollout_s", "time_reward_s", "time_score_s", "time_advantage_s", "time_train_s"]
  assert all(r[k] > 0 for k in phases)
  assert r["time_iteration_s"] == pytest.approx(sum(r[k] for k in phases))
  assert r["train_steps"] == 2 * 8 // 4
  assert r["rollout_tok_s"] == pytest.approx(8 * 16 / r["time_rollout_s"])
  assert "peak_memory_gb" in r and r["platform"] == "cpu"
  # bf16 compute: the cached decode and the full forward differ a little, and the drift is logged
  assert 0 <= r["logprob_drift_max"] < 0.1
  assert 0 <= r["reward_mean"] <= 1
