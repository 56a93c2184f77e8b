"""The mesh and the parameter layout: a Hugging Face checkpoint loads straight into its shardings on
(data, fsdp, tensor) meshes of the 8 forced CPU devices, and gives the same logits on every mesh."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import rlthink
from rlthink import sharding
from rlthink.models import decoder

CONFIG = rlthink.ModelConfig(architecture="qwen2", qkv_bias=True, tie_embeddings=False,
                             vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                             num_heads=4, num_kv_heads=2, max_seq_len=64)
MESHES = [(1, 1, 1), (8, 1, 1), (1, 8, 1), (2, 2, 2)]
# Expected layouts on the 2x2x2 mesh: FSDP over `embed`, tensor parallel over heads / mlp / vocab.
EXPECTED_2x2x2 = {
    "embedding": P("tensor", "fsdp"),
    "lm_head": P("fsdp", "tensor"),
    "final_norm/scale": P("fsdp"),
    "layers/input_norm/scale": P(None, "fsdp"),
    "layers/attn/q_proj": P(None, "fsdp", "tensor", None),
    "layers/attn/k_proj": P(None, "fsdp", "tensor", None),
    "layers/attn/q_bias": P(None, "tensor", None),
    "layers/attn/o_proj": P(None, "tensor", None, "fsdp"),
    "layers/mlp/gate_proj": P(None, "fsdp", "tensor"),
    "layers/mlp/down_proj": P(None, "tensor", "fsdp"),
}


def _flat(params):
  return {"/".join(k.key for k in p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A Hugging Face directory with random weights, written by rlthink's exporter."""
  shapes, _ = decoder.abstract_params(CONFIG)
  rng = np.random.RandomState(0)
  params = jax.tree_util.tree_map_with_path(
      lambda p, s: np.float32((p[-1].key == "scale") + 0.1 * rng.randn(*s.shape)), shapes)
  path = tmp_path_factory.mktemp("sharding") / "model"
  rlthink.Policy(config=CONFIG, params=params).save_pretrained(str(path))
  reference = rlthink.load_pretrained(path)
  tokens = np.random.RandomState(1).randint(0, 128, (8, 8))
  mask = np.ones((8, 8), bool)
  mask[::2, :3] = False  # left padding on half the rows
  return path, reference, tokens, mask


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_checkpoint_loads_sharded_and_gives_the_same_logits(shape, checkpoint, tmp_path):
  path, reference, tokens, mask = checkpoint
  devices = jax.devices()[:int(np.prod(shape))]
  mesh = sharding.make_mesh(shape, devices)
  policy = rlthink.load_pretrained(path, mesh=mesh)

  expected_shardings = _flat(decoder.param_shardings(CONFIG, mesh))
  ref_params = _flat(reference.params)
  for name, x in _flat(policy.params).items():
    assert x.sharding.is_equivalent_to(expected_shardings[name], x.ndim), name
    # Every device holds exactly its piece, and the piece is the right slice of the weights.
    for shard in x.addressable_shards:
      assert shard.data.shape == expected_shardings[name].shard_shape(x.shape), name
      np.testing.assert_array_equal(np.asarray(shard.data),
                                    np.asarray(ref_params[name])[shard.index])
  if shape == (2, 2, 2):
    for name, spec in EXPECTED_2x2x2.items():
      x = _flat(policy.params)[name]
      assert x.sharding.is_equivalent_to(NamedSharding(mesh, spec), x.ndim), (name, x.sharding)
      assert x.addressable_shards[0].data.size < x.size, name  # no device holds it whole
    # Exporting gathers the sharded params back into the same checkpoint.
    policy.save_pretrained(str(tmp_path / "export"))
    back = _flat(rlthink.load_pretrained(tmp_path / "export").params)
    for name, x in ref_params.items():
      np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(x), err_msg=name)

  for attention_mask in (None, mask):
    got = np.asarray(policy.logits(tokens, attention_mask), np.float64)
    want = np.asarray(reference.logits(tokens, attention_mask), np.float64)
    valid = np.ones(tokens.shape, bool) if attention_mask is None else attention_mask
    assert np.max(np.abs(got - want)[valid]) <= 1e-5 * np.max(np.abs(want[valid]))


def test_fsdp_only_mesh_replicates_nothing_it_can_split(checkpoint):
  path = checkpoint[0]
  mesh = sharding.make_mesh((1, 8, 1))
  params = _flat(rlthink.load_pretrained(path, mesh=mesh).params)
  assert params["layers/attn/q_proj"].sharding.is_equivalent_to(
      NamedSharding(mesh, P(None, "fsdp", None, None)), 4)
  assert params["layers/mlp/down_proj"].addressable_shards[0].data.shape == (2, 128, 8)
  # Without a tensor axis, params without an `embed` axis stay whole on every device.
  assert params["layers/attn/k_bias"].sharding.is_fully_replicated


def test_make_mesh_rejects_shapes_that_do_not_fit_the_devices():
  assert len(jax.devices()) == 8
  assert sharding.make_mesh((2, -1, 2)).shape == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match="needs 4 devices, but 8 are available"):
    sharding.make_mesh((2, 2, 1))
  with pytest.raises(ValueError, match="does not divide the 8 devices"):
    sharding.make_mesh((3, -1, 1))
  with pytest.raises(ValueError, match="must name 3 sizes"):
    sharding.make_mesh((8,))
