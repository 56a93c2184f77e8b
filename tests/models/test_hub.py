"""A model named by a Hub id resolves through the standard Hugging Face cache, offline."""

import os
import shutil

import hf_fixtures
import pytest

import rlthink
from rlthink.gin_utils import ModelSpec
from rlthink.models import hub

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _cache_with(cache, repo_id, source):
  """`source`'s files as the cache holds a downloaded snapshot of `repo_id`."""
  root = cache / f"models--{repo_id.replace('/', '--')}"
  snapshot = root / "snapshots" / REVISION
  shutil.copytree(source, snapshot)
  (root / "refs").mkdir()
  (root / "refs" / "main").write_text(REVISION)
  return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  cache = tmp_path / "hub"
  cache.mkdir()
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  return cache


def test_a_cached_hub_id_loads_like_its_directory(tmp_path, hub_cache):
  hf_fixtures.save_hf_model("qwen2", tmp_path / "src", eos_token_id=[5, 9])
  snapshot = _cache_with(hub_cache, "org/tiny-model", tmp_path / "src")
  assert os.path.samefile(hub.resolve_model_dir("org/tiny-model"), snapshot)
  policy = rlthink.load_pretrained("org/tiny-model")
  assert policy.config.eos_token_id == (5, 9)
  assert ModelSpec(hf_path="org/tiny-model").config() == policy.config
  # A local directory is taken as it is, never looked up in the cache.
  assert hub.resolve_model_dir(str(tmp_path / "src")) == str(tmp_path / "src")


def test_a_hub_id_missing_offline_is_one_line_saying_what_to_do(hub_cache):
  with pytest.raises(FileNotFoundError) as error:
    ModelSpec(hf_path="Qwen/Qwen2.5-1.5B-Instruct").config()
  message = str(error.value)
  assert "\n" not in message
  assert "hf download Qwen/Qwen2.5-1.5B-Instruct" in message
  assert "pass a local directory" in message and str(hub_cache) in message
