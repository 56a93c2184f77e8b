"""The tiny complementary-reasoning experiment, run once per pytest session and shared by its
config test and its notebook test.

`tiny_report(tmp_path_factory)` runs `rlthink sweep` on experiments/complementary_reasoning_tiny.gin
(seed 0, as a subprocess on one CPU device with its own persistent XLA cache, so the stages that
compile the same programs load them), then `rlthink report` on the sweep, and returns the sweep
directory (report.md, report.json and the PNGs are written there). Later calls reuse it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import run_fixtures as rf

GIN_FILE = "experiments/complementary_reasoning_tiny.gin"
# The chunks docs/results/complementary_reasoning.md runs the GPU-scale file in: together every
# stage, each reported by one chunk.
CHUNKS = ("sft_memctx,rl_comp", "sft_comp,sft_comp_rl", "rl_memctx,rl_memctx_comp", "sft_all")

_cache: dict[str, str] = {}


def tiny_report(tmp_path_factory) -> str:
  """The sweep directory of the tiny experiment, with its report (built on first use)."""
  if "sweep" not in _cache:
    _cache["sweep"] = _run(str(tmp_path_factory.mktemp("complementary_reasoning")))
  return _cache["sweep"]


def _run(root: str) -> str:
  sweep, log = os.path.join(root, "sweep"), os.path.join(root, "sweep.log")
  env = dict(rf.cli_env(), XLA_FLAGS="", JAX_COMPILATION_CACHE_DIR=os.path.join(root, "xla"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  with open(log, "wb") as out:
    code = subprocess.call([sys.executable, "-m", "rlthink.cli", "sweep", "--gin_file", GIN_FILE,
                            "--workdir", sweep, "--seeds", "0", "--no_progress"],
                           cwd=rf.REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
  if code != 0:
    raise AssertionError(f"the tiny sweep failed (exit {code}):\n{rf.tail(log)}")
  return sweep
