"""Test set-up: 8 forced CPU devices for the sharding tests (must precede the first jax import)."""

import logging
import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _logging_restored():
  """Whatever a test does to the root and rlthink loggers (`rlthink.cli.main` runs
  logging.basicConfig onto the test's captured stderr) is undone after it, so no later test logs
  into a closed stream."""
  loggers = [logging.getLogger(), logging.getLogger("rlthink")]
  saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
  yield
  for lg, (handlers, level, propagate) in zip(loggers, saved):
    lg.handlers[:] = handlers
    lg.setLevel(level)
    lg.propagate = propagate


@pytest.fixture
def cli_state():
  """`rlthink.cli.main` binds gin (cleared afterwards; its logging is undone by
  `_logging_restored`)."""
  import gin  # after the environment above is set
  yield
  gin.clear_config()
