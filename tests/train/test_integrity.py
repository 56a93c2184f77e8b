"""What keeps a run honest: the NaN guard (loss, gradients and updated parameters), checkpoints
that are never saved non-finite and are verified by checksum on restore (a corrupt newest one
falls back to the previous good one), read-only checkpoints, and batches with no loss tokens."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlthink.models.presets import get_preset
from rlthink.train import (Checkpointer, MetricsLogger, NonFiniteLossError, OptimizerConfig,
                           create_state, make_optimizer, make_train_step, run_steps)
from rlthink.train import checkpoint as checkpoint_lib
from rlthink.train.checkpoint import CorruptCheckpointError

CONFIG = get_preset("tiny")  # only names the model in the checkpoint meta


def linear_loss(params, batch, rng):
  """A finite loss whose gradient is NaN when batch["poison"] is 1: d/dw sqrt(0 * |w|) = inf * 0."""
  del rng
  loss = jnp.mean((params["w"] * batch["x"]) ** 2)
  loss = loss + jnp.sqrt(jnp.abs(params["w"][0]) * (1.0 - batch["poison"]))
  return loss, {"loss": loss}


def batch_at(poisoned_steps=()):
  def batch(i):
    x = np.random.default_rng(i).normal(size=(4,)).astype(np.float32)
    return {"x": x, "poison": np.float32(i + 1 in poisoned_steps)}
  return batch


def setup(tmp_path, cfg=None, w=1.0, total=8):
  opt = make_optimizer(cfg or OptimizerConfig(learning_rate=1e-2), total)
  params = {"w": jnp.full((4,), w, jnp.float32)}
  state = create_state(params, opt, seed=0)
  return state, make_train_step(linear_loss, opt, state), MetricsLogger(str(tmp_path),
                                                                         progress=False)


def test_nan_gradients_with_a_finite_loss_stop_before_any_save_naming_the_last_good(tmp_path):
  state, step, logger = setup(tmp_path)
  ckpt = Checkpointer(str(tmp_path), CONFIG)
  save = lambda i, s: ckpt.save(i, s, {"position": i})
  with pytest.raises(NonFiniteLossError) as e:
    run_steps(state, step, batch_at(poisoned_steps=(3,)), 0, 6, mesh=None, logger=logger,
              log_every=4, checkpoint_every=2, save=save, checkpointer=ckpt)
  message = str(e.value)
  assert "at step 3: gradient norm nan" in message
  assert f"The last good checkpoint is {ckpt.directory}/2." in message
  assert ckpt.latest_step() == 2  # step 4's NaN state was never saved
  restored, meta = ckpt.restore(state)
  assert meta["position"] == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored))


def test_nan_guard_says_when_there_is_no_checkpoint(tmp_path):
  state, step, logger = setup(tmp_path)
  ckpt = Checkpointer(str(tmp_path), CONFIG)
  with pytest.raises(NonFiniteLossError, match="There is no good checkpoint under"):
    run_steps(state, step, batch_at(poisoned_steps=(1,)), 0, 2, mesh=None, logger=logger,
              checkpointer=ckpt)
  # A driver formatting its own path from latest_step() (None here) is not believed either.
  state, step, logger = setup(tmp_path)  # the first state was donated
  with pytest.raises(NonFiniteLossError, match="No checkpoint was saved before it"):
    run_steps(state, step, batch_at(poisoned_steps=(1,)), 0, 2, mesh=None, logger=logger,
              last_checkpoint=lambda: f"{ckpt.directory}/{ckpt.latest_step()}")


def test_updated_parameters_that_overflow_stop_the_run(tmp_path):
  # Finite loss and gradients; weight decay of 1e30 on weights of 1e10 overflows the update.
  cfg = OptimizerConfig(learning_rate=1.0, weight_decay=1e30, clip_norm=None)
  state, step, logger = setup(tmp_path, cfg, w=1e10)
  with pytest.raises(NonFiniteLossError, match="at step 1: the updated parameters hold NaN/Inf"):
    run_steps(state, step, batch_at(), 0, 1, mesh=None, logger=logger)


def test_a_non_finite_state_is_never_saved(tmp_path):
  state, _, _ = setup(tmp_path)
  ckpt = Checkpointer(str(tmp_path), CONFIG)
  ckpt.save(1, state, {})
  bad = state.replace(params={"w": state.params["w"].at[2].set(jnp.inf)})
  with pytest.raises(NonFiniteLossError, match=r"1 arrays hold NaN/Inf, e.g. .*\['w'\].*"
                                               r"The last good checkpoint is .*/checkpoints/1\."):
    ckpt.save(2, {"state": bad}, {})
  assert ckpt.latest_step() == 1


def saved_twice(tmp_path):
  state, _, _ = setup(tmp_path)
  ckpt = Checkpointer(str(tmp_path), CONFIG)
  states = {1: state, 2: state.replace(params={"w": state.params["w"] + 1.0})}
  for step, s in states.items():
    ckpt.save(step, s, {"position": step})
  return ckpt, states


def flip_bytes(step_dir, count=8):
  """Overwrites `count` bytes in the middle of the largest data file of the saved state."""
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(step_dir, "state"))
           for name in names]
  target = max(files, key=os.path.getsize)
  with open(target, "r+b") as f:
    data = bytearray(f.read())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(255 - b for b in data[middle:middle + count])
    f.seek(0)
    f.write(data)
  return target


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  ckpt, states = saved_twice(tmp_path)
  flip_bytes(ckpt.step_path(2))
  fresh = Checkpointer(str(tmp_path), CONFIG)
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/2: file state/.* does not match"):
    fresh.restore(states[1], step=2)  # an explicit step is never swapped for another
  with caplog.at_level(logging.WARNING):
    restored, meta = fresh.restore(states[1])
  assert meta["position"] == 1 and fresh.corrupt_steps == [2]
  np.testing.assert_array_equal(np.asarray(restored.params["w"]), np.asarray(states[1].params["w"]))
  assert f"{ckpt.directory}/2: file state/" in caplog.text
  assert "falling back to the previous checkpoint" in caplog.text
  # The bad one is kept aside for inspection, and the resumed run can save step 2 again.
  assert sorted(os.listdir(ckpt.directory)) == ["1", "2.corrupt"]
  assert fresh.latest_step() == 1
  fresh.save(2, states[2], {"position": 2})
  assert Checkpointer(str(tmp_path), CONFIG).restore(states[1])[1]["position"] == 2


def test_every_checkpoint_corrupt_is_one_error_naming_them(tmp_path):
  ckpt, states = saved_twice(tmp_path)
  flip_bytes(ckpt.step_path(1))
  os.remove(os.path.join(ckpt.step_path(2), "meta", "metadata"))
  with pytest.raises(CorruptCheckpointError, match=r"every checkpoint under .* is corrupt: .*"
                                                   r"/2: file meta/metadata is missing.*/1: file"):
    Checkpointer(str(tmp_path), CONFIG).restore(states[1])


def test_a_checkpoint_without_checksums_still_loads(tmp_path):
  ckpt, states = saved_twice(tmp_path)  # e.g. killed between orbax's commit and the checksums
  os.remove(os.path.join(ckpt.step_path(2), checkpoint_lib.CHECKSUMS))
  assert Checkpointer(str(tmp_path), CONFIG).restore(states[1])[1]["position"] == 2


def test_read_only_checkpoints_restore_but_never_save(tmp_path, monkeypatch):
  _, states = saved_twice(tmp_path)
  def unwritable(directory):
    raise PermissionError(f"workdir {directory!r} is not writable: Read-only file system")
  monkeypatch.setattr(checkpoint_lib, "ensure_writable", unwritable)
  ckpt = Checkpointer(str(tmp_path), CONFIG)  # holds checkpoints: opened read-only
  assert ckpt.read_only and ckpt.restore(states[1])[1]["position"] == 2
  with pytest.raises(PermissionError, match="opened read-only"):
    ckpt.save(3, states[1], {})
  with pytest.raises(PermissionError, match="not writable"):  # nothing to read: the plain error
    Checkpointer(str(tmp_path / "empty"), CONFIG)


def test_a_batch_with_no_loss_tokens_is_an_error_with_its_numbers(tmp_path):
  state, step, logger = setup(tmp_path)
  def batch(i):
    return dict(batch_at()(i), loss_mask=np.zeros((2, 8), bool),
                attention_mask=np.ones((2, 8), bool))
  with pytest.raises(ValueError, match=r"batch of step 1 has no loss tokens: loss_mask of shape "
                                       r"\(2, 8\) is all False; its rows hold 16 tokens.*max_length"):
    run_steps(state, step, batch, 0, 1, mesh=None, logger=logger)
