"""gin at the edge: strict parsing with file:line errors, includes, the specs, every config file."""

import glob
import os

import gin
import pytest

from rlthink import gin_utils
from rlthink.gin_utils import GinConfigError, MeshSpec, ModelSpec


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config(clear_constants=True)


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_misspelled_parameter_in_gin_param_fails_naming_it():
  with pytest.raises(GinConfigError) as e:
    gin_utils.parse([], ["ModelSpec.presett = 'tiny'"])
  msg = str(e.value)
  assert "--gin_param" in msg and "unknown binding 'ModelSpec.presett'" in msg
  assert "Did you mean 'preset'?" in msg


def test_misspelled_parameter_in_file_fails_with_file_and_line(tmp_path):
  path = _write(tmp_path, "x.gin", "# a comment\nMeshSpec.shape = (1, -1, 1)\nModelSpec.hf_pth = 'd'\n")
  with pytest.raises(GinConfigError) as e:
    gin_utils.parse([path], [])
  assert str(e.value).startswith(f"{path}:3: unknown binding 'ModelSpec.hf_pth'")
  assert "Did you mean 'hf_path'?" in str(e.value)


def test_unknown_configurable_is_reported_with_the_known_ones():
  with pytest.raises(GinConfigError, match=r"unknown binding 'ModelSpc.preset'.*'ModelSpec'"):
    gin_utils.parse([], ["ModelSpc.preset = 'tiny'"])


def test_syntax_error_names_file_and_line(tmp_path):
  path = _write(tmp_path, "bad.gin", "ModelSpec.preset = 'tiny'\nModelSpec.seed = 1 2\n")
  with pytest.raises(GinConfigError, match=rf"^{path}:2: gin syntax error"):
    gin_utils.parse([path], [])


def test_unbalanced_bracket_is_a_gin_config_error(tmp_path):
  path = _write(tmp_path, "open.gin", "MeshSpec.shape = (1, -1\n")
  with pytest.raises(GinConfigError, match="syntax error"):
    gin_utils.parse([path], [])


def test_missing_file_is_named(tmp_path):
  missing = str(tmp_path / "nope.gin")
  with pytest.raises(GinConfigError, match=rf"^{missing}: cannot read gin file"):
    gin_utils.parse([missing], [])


def test_bad_value_fails_at_parse_naming_the_binding(tmp_path):
  path = _write(tmp_path, "v.gin", "ModelSpec.preset = 'tinyy'\n")
  with pytest.raises(GinConfigError, match=rf"^{path}:1: ModelSpec.preset='tinyy' is not a known"):
    gin_utils.parse([path], [])
  with pytest.raises(GinConfigError, match=r"unknown ModelConfig fields \['num_layer'\]"):
    gin_utils.parse([], ["ModelSpec.overrides = {'num_layer': 2}"])


def test_include_relative_to_configs_dir_and_params_override(tmp_path):
  path = _write(tmp_path, "exp.gin", "include 'models/qwen2.5-0.5b.gin'\nModelSpec.seed = 3\n")
  gin_utils.parse([path], [])
  assert ModelSpec().preset == "qwen2.5-0.5b" and ModelSpec().seed == 3
  gin_utils.parse([path], ["ModelSpec.preset = 'tiny'", "MeshSpec.shape = [1, 2, 1]"])
  assert ModelSpec().preset == "tiny"
  assert MeshSpec().shape == (1, 2, 1)


def test_include_works_when_a_models_namespace_package_is_importable(tmp_path, monkeypatch):
  # e.g. tests/models on sys.path under pytest: gin must not mistake it for the include's home.
  (tmp_path / "models").mkdir()
  monkeypatch.syspath_prepend(str(tmp_path))
  path = _write(tmp_path, "exp.gin", "include 'models/llama3.2-1b.gin'\n")
  gin_utils.parse([path], [])
  assert ModelSpec().preset == "llama3.2-1b"


def test_model_spec_builds_policy_with_overrides_on_mesh():
  gin_utils.parse([], ["ModelSpec.overrides = {'num_layers': 2, 'vocab_size': 64}",
                       "ModelSpec.dtype = 'bfloat16'", "MeshSpec.shape = (2, 4, 1)"])
  mesh = MeshSpec().build()
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  policy = ModelSpec().build(mesh)
  assert policy.config.num_layers == 2 and policy.config.vocab_size == 64
  assert policy.config.dtype == "bfloat16"
  assert policy.params["embedding"].shape == (64, 128)
  assert policy.params["layers"]["mlp"]["up_proj"].sharding.mesh.shape == mesh.shape
  assert "ModelSpec.dtype = 'bfloat16'" in gin_utils.operative_config_str()


def test_mesh_spec_rejects_wrong_rank():
  with pytest.raises(GinConfigError, match=r"MeshSpec.shape=\(1, 2\) must be 3 ints"):
    gin_utils.parse([], ["MeshSpec.shape = (1, 2)"])


CONFIG_FILES = sorted(glob.glob(os.path.join(gin_utils.CONFIGS_DIR, "**", "*.gin"), recursive=True))


def test_configs_exist():
  names = {os.path.relpath(p, gin_utils.CONFIGS_DIR) for p in CONFIG_FILES}
  for preset in ("tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "qwen3-0.6b",
                 "llama3.2-1b", "llama3.1-8b"):
    assert f"models/{preset}.gin" in names


@pytest.mark.parametrize("path", CONFIG_FILES,
                         ids=[os.path.relpath(p, gin_utils.CONFIGS_DIR) for p in CONFIG_FILES])
def test_every_config_file_parses(path):
  gin_utils.parse([path], [])
  if os.path.basename(os.path.dirname(path)) == "models":
    assert ModelSpec().preset == os.path.basename(path)[:-len(".gin")]
    ModelSpec().config()  # the preset exists and the overrides are valid ModelConfig fields


def test_mesh_spec_without_shape_chooses_the_automatic_shape_for_the_model():
  import jax

  from rlthink import sharding
  from rlthink.gin_utils import MeshSpec, ModelSpec
  from rlthink.models.presets import get_preset
  config = ModelSpec(preset="tiny").config()
  devices = jax.devices()
  mesh = MeshSpec().build(config=config)
  expected = sharding.auto_mesh_shape(len(devices), config,
                                      device_memory_bytes=sharding._device_memory(devices[0]))
  assert tuple(mesh.shape[a] for a in sharding.MESH_AXES) == expected
  # 12 heads cannot split 8 ways on tensor: a given shape is checked against the model.
  with pytest.raises(ValueError, match="heads"):
    MeshSpec(shape=(1, 1, 8)).build(config=get_preset("qwen2.5-1.5b"))


def test_model_spec_config_of_a_hugging_face_directory(tmp_path):
  import json

  from rlthink.gin_utils import ModelSpec
  from rlthink.models import hf
  from rlthink.models.presets import get_preset
  config = get_preset("tiny")
  (tmp_path / "config.json").write_text(json.dumps(hf.config_to_hf(config)))
  got = ModelSpec(hf_path=str(tmp_path), dtype="bfloat16").config()
  assert got.hidden_size == config.hidden_size and got.dtype == "bfloat16"
  with pytest.raises(FileNotFoundError, match="config.json"):
    ModelSpec(hf_path=str(tmp_path / "missing")).config()


def test_packaged_configs_are_found_by_name_from_any_cwd(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  assert gin_utils.CONFIGS_DIR.startswith(os.path.dirname(gin_utils.__file__))
  gin_utils.parse(["models/qwen2.5-0.5b.gin"], [])
  assert ModelSpec().preset == "qwen2.5-0.5b"


def test_gin_search_path_adds_user_folders_before_the_packaged_configs(tmp_path, monkeypatch):
  mine = tmp_path / "mine"
  (mine / "models").mkdir(parents=True)
  (mine / "models" / "tiny.gin").write_text("ModelSpec.preset = 'qwen3-0.6b'\n")  # shadows
  (mine / "exp.gin").write_text("include 'models/tiny.gin'\nModelSpec.seed = 5\n")
  monkeypatch.chdir(tmp_path / "mine" / "models")
  gin_utils.parse(["exp.gin"], [], gin_utils.search_path([str(mine)]))
  assert (ModelSpec().preset, ModelSpec().seed) == ("qwen3-0.6b", 5)
  assert gin_utils.where_bound("ModelSpec") == "exp.gin:2"
  # The next parse without the folder no longer sees it.
  with pytest.raises(GinConfigError, match="exp.gin: cannot read gin file"):
    gin_utils.parse(["exp.gin"], [])
  with pytest.raises(GinConfigError, match="--gin_search_path .*nope.* is not a directory"):
    gin_utils.search_path([str(tmp_path / "nope")])


def test_config_names_lists_the_packaged_experiments_and_models():
  names = gin_utils.config_names()
  assert "experiments/quickstart.gin" in names["experiments"]
  assert "models/tiny.gin" in names["models"]
