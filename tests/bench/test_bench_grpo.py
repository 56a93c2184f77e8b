"""`rlthink bench grpo --quick`: runs where gin, TFDS, grain and tensorboardX are missing (the
accelerator image), times every phase of one GRPO iteration, and says why tunix did not run when
it is not installed."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlthink.bench import grpo, iteration

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
  assert r["rlthink_reference_s"] == 0  # no KL term, no reference forward
  for part, phases in grpo.PARTS.items():
    assert r[f"rlthink_{part}_s"] == pytest.approx(sum(r[f"rlthink_{p}_s"] for p in phases))
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


def test_lora_iteration_trains_the_adapters_alone_with_the_base_as_reference():
  """--lora_rank: the train state holds only the adapters (float32), the frozen base is in the
  compute dtype and is the reference of the KL term (its scoring forward is timed), and the
  record splits the iteration into rollout / score / train."""
  args = grpo.parse_args(["--quick", "--systems", "rlthink", "--lora_rank", "2", "--kl_coef",
                          "0.1", "--lr", "1e-2"])
  config = grpo.model_config("qwen2.5-0.5b", args)
  system = grpo.RlthinkGRPO(config, args)
  leaves = jax.tree_util.tree_flatten_with_path(system.state.params)[0]
  assert leaves and all(jax.tree_util.keystr(k).endswith(("_lora_a']", "_lora_b']"))
                        for k, _ in leaves)
  assert {x.dtype for _, x in leaves} == {np.dtype("float32")}
  assert system.reference is system.trainable.base
  assert system.trainable.base["layers"]["attn"]["q_proj"].dtype == jnp.bfloat16
  base_before = jax.tree.map(np.asarray, system.trainable.base)
  verify = iteration.make_verifier(args.prompts)
  prompts = iteration.random_prompts(config.vocab_size, args.prompts, args.prompt_len)
  times = system.iteration(prompts, verify, seed=0)
  assert times["reference_s"] > 0 and times["update_s"] > 0 and np.isfinite(times["loss"])
  assert int(system.state.step) == 1
  assert all(np.array_equal(x, np.asarray(y)) for x, y in
             zip(jax.tree.leaves(base_before), jax.tree.leaves(system.trainable.base)))
