"""Train-state, step, checkpoint and loop behaviour on the tiny model with synthetic batches."""

import os
import stat

import jax
import numpy as np
import pytest

import rlthink
from rlthink import sharding
from rlthink.train import (Checkpointer, CheckpointMismatchError, MetricsLogger,
                           NonFiniteLossError, OptimizerConfig, create_state, make_optimizer,
                           make_train_step, run_steps, sft_loss)



def tiny_policy(mesh=None, **overrides):
  overrides.setdefault("num_layers", 2)
  return rlthink.init_policy("tiny", seed=0, mesh=mesh, **overrides)


def batch_at(i, batch=8, length=16, vocab=512):
  rng = np.random.default_rng(i)  # a pure function of the data position
  tokens = rng.integers(0, vocab, (batch, length)).astype(np.int32)
  loss_mask = np.ones((batch, length), np.int32)
  loss_mask[:, :4] = 0  # the "prompt"
  return {"tokens": tokens, "loss_mask": loss_mask}


def run(policy, workdir, start, stop, total, mesh=None, state=None, ckpt=None, accum=1):
  opt = make_optimizer(OptimizerConfig(learning_rate=3e-3, grad_accum_steps=accum), total)
  state = state or create_state(policy.params, opt, seed=1)
  step = make_train_step(sft_loss(policy.config, mesh), opt, state, grad_accum_steps=accum)
  logger = MetricsLogger(str(workdir), total=total, progress=False)
  save = None
  if ckpt is not None:
    save = lambda i, s: ckpt.save(i, s, {"position": i})
  state, last = run_steps(state, step, batch_at, start, stop, mesh=mesh, logger=logger,
                          log_every=2, checkpoint_every=2, save=save)
  logger.close()
  return state, last


def test_sft_steps_reduce_loss_on_a_repeated_batch(tmp_path):
  policy = tiny_policy()
  opt = make_optimizer(OptimizerConfig(learning_rate=3e-3), 30)
  state = create_state(policy.params, opt, seed=0)
  step = make_train_step(sft_loss(policy.config), opt, state)
  batch = jax.tree.map(jax.numpy.asarray, batch_at(0))
  losses = []
  for _ in range(30):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 30


def test_grad_accumulation_matches_full_batch():
  from rlthink.train.step import _accumulated_grads
  policy = tiny_policy()
  loss_fn = sft_loss(policy.config)
  batch = jax.tree.map(jax.numpy.asarray, batch_at(0))
  key = jax.random.key(0)
  (l1, _), g1 = jax.jit(lambda p, b: _accumulated_grads(loss_fn, p, b, key, 1))(policy.params, batch)
  (l4, _), g4 = jax.jit(lambda p, b: _accumulated_grads(loss_fn, p, b, key, 4))(policy.params, batch)
  np.testing.assert_allclose(l1, l4, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  # and the step itself runs with accumulation
  _, m = run(policy, "/tmp/unused_metrics", 0, 1, 1, accum=4)
  np.testing.assert_allclose(m["train/loss"], l1, rtol=1e-5)


def test_resume_from_checkpoint_is_exact(tmp_path):
  policy = tiny_policy()
  full, _ = run(policy, tmp_path / "a", 0, 6, 6)

  ckpt = Checkpointer(str(tmp_path / "b"), policy.config)
  run(policy, tmp_path / "b", 0, 4, 6, ckpt=ckpt)
  assert ckpt.latest_step() == 4
  fresh = create_state(policy.params, make_optimizer(OptimizerConfig(learning_rate=3e-3), 6), 1)
  restored, meta = ckpt.restore(fresh)
  assert meta["position"] == 4 and int(restored.step) == 4
  resumed, _ = run(policy, tmp_path / "b", 4, 6, 6, state=restored)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 6 and os.path.isdir(tmp_path / "b" / "tb")


def test_sharded_training_matches_single_device(tmp_path):
  policy = tiny_policy()
  single, m1 = run(policy, tmp_path / "a", 0, 2, 2)
  mesh = sharding.make_mesh((2, 2, 2))
  sharded_policy = tiny_policy(mesh)
  sharded, m2 = run(sharded_policy, tmp_path / "b", 0, 2, 2, mesh=mesh)
  assert sharded.params["layers"]["attn"]["q_proj"].sharding.spec == jax.sharding.PartitionSpec(
      None, "fsdp", "tensor", None)
  np.testing.assert_allclose(m1["train/loss"], m2["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["train/grad_norm"], m2["train/grad_norm"], rtol=1e-5)
  # Adam normalizes each update to ~lr (3e-3 here), so a gradient element near zero can move its
  # parameter by up to ~lr on either side under float reordering: compare at a small fraction of
  # two steps' reach, and require nearly all elements to agree far tighter.
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)):
    diff = np.abs(np.asarray(a) - np.asarray(b))
    assert diff.max() < 2e-4
    assert np.mean(diff > 2e-6) < 1e-3


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path):
  policy = tiny_policy()
  opt = make_optimizer(OptimizerConfig(learning_rate=1e-3), 4)
  state = create_state(policy.params, opt, 0)
  poisoned = jax.tree.map(lambda x: x * np.nan, state.params)
  step = make_train_step(sft_loss(policy.config), opt, state)
  logger = MetricsLogger(str(tmp_path), progress=False)
  (tmp_path / "3").mkdir()
  with pytest.raises(NonFiniteLossError, match=rf"at step 1.*checkpoint is {tmp_path}/3\."):
    run_steps(state.replace(params=poisoned), step, batch_at, 0, 2, mesh=None, logger=logger,
              log_every=1, last_checkpoint=lambda: str(tmp_path / "3"))


def test_checkpoint_of_a_different_model_is_refused_and_kept(tmp_path):
  policy = tiny_policy()
  ckpt = Checkpointer(str(tmp_path), policy.config)
  opt = make_optimizer(OptimizerConfig(), 1)
  ckpt.save(1, create_state(policy.params, opt, 0), {})
  before = sorted(os.listdir(ckpt.directory))
  other = tiny_policy(hidden_size=64)
  with pytest.raises(CheckpointMismatchError, match="hidden_size: checkpoint 128 vs run 64"):
    Checkpointer(str(tmp_path), other.config).restore(create_state(other.params, opt, 0))
  assert sorted(os.listdir(ckpt.directory)) == before
  restored, _ = Checkpointer(str(tmp_path), policy.config).restore(create_state(policy.params, opt, 0))
  assert int(restored.step) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_workdir_gives_one_clear_error(tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
  with pytest.raises(PermissionError, match="not writable"):
    Checkpointer(str(locked / "run"), tiny_policy().config)


def test_workdir_that_is_a_file_gives_one_clear_error(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(PermissionError, match="is not writable"):
    Checkpointer(str(path), tiny_policy().config)


def test_metrics_of_a_resumed_run_are_not_written_twice(tmp_path):
  import json
  first = MetricsLogger(str(tmp_path), progress=False)
  for step in (1, 2, 3):
    first.log(step, {"loss": 1.0 / step}, "sft/")
  first.log(1, {"reward": 0.5}, "ei/")  # another kind of record at the same step number
  first.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "sft/lo')  # a line cut by the kill
  resumed = MetricsLogger(str(tmp_path), progress=False)
  for step in (2, 3, 4):  # resumed from the checkpoint at step 1
    values = resumed.log(step, {"loss": 1.0 / step}, "sft/")
  assert values == {"sft/loss": 0.25}
  resumed.close()
  records = []
  with open(tmp_path / "metrics.jsonl") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        pass
  assert [(r["step"], sorted(k for k in r if k not in ("step", "time"))) for r in records] == [
      (1, ["sft/loss"]), (2, ["sft/loss"]), (3, ["sft/loss"]), (1, ["ei/reward"]),
      (4, ["sft/loss"])]
