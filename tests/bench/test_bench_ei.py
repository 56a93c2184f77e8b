"""`rlthink bench ei --quick`: runs where gin, TFDS, grain and tensorboardX are missing (the
accelerator image) and splits the round into its phases, with long-tailed lengths, continuous
batching and chunked sampling verified while the next chunk samples."""

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
from rlthink.bench import ei
sys.exit(ei.main(["--quick", "--lengths", "longtail", "--max_slots", "4", "--sample_chunks", "2",
                  "--out", sys.argv[1]]))
"""


@pytest.fixture(scope="module")
def record(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench_ei") / "ei.jsonl"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device: quicker
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(out)], capture_output=True, text=True,
                        env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = out.read_text().splitlines()
  assert len(lines) == 1
  return json.loads(lines[0])


def test_quick_round_reports_each_phase_on_long_tailed_lengths(record):
  r = record
  assert (r["bench"], r["model"], r["rows"], r["lengths"], r["max_slots"]) == (
      "ei", "tiny", 16, "longtail", 4)
  phases = ("sample", "verify", "old_logprobs", "prepare", "update")
  assert r["total_s"] == pytest.approx(sum(r[f"{p}_s"] for p in phases))
  assert r["old_logprobs_s"] == 0.0 and r["update_s"] > 0 and r["sample_s"] > 0
  # The forced long-tail lengths were sampled (16 rows of one workload draw).
  limits = rollout.workload(512, 16, 2, 1, 16, 0.25, 1.0, seed=0).lengths
  assert r["sampled_tokens"] == int(np.sum(limits))
  assert r["sample_tok_s"] == pytest.approx(r["sampled_tokens"] / r["sample_s"])
