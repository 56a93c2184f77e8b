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


@pytest.fixture
def cli_state():
  """`rlthink.cli.main` binds gin and (re)configures the root logger: undoes both afterwards."""
  import gin  # after the environment above is set
  root = logging.getLogger()
  handlers, level = root.handlers[:], root.level
  yield
  gin.clear_config()
  root.handlers[:] = handlers
  root.setLevel(level)
