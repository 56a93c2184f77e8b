"""Multi-host runs: start-up from flags and the environment, the data and mesh choices, and a tiny
SFT job in 2 CPU processes (jax.distributed on a localhost coordinator, gloo collectives) that
matches the same job in one process, with checkpoints that restore across the two topologies.

Run as a script, this file is one process of the 2-process job (see `_worker`).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rlthink import distributed, sharding
from rlthink.models.config import ModelConfig
from rlthink.models.presets import get_preset

# The job both topologies run: 4 devices as (data=1, fsdp=2, tensor=2); on 2 processes each
# holds one fsdp row (half the batch) and the tensor axis stays inside a process.
MESH_SHAPE = (1, 2, 2)
TASK = dict(size="tiny", num_train=64, num_test=8, seed=0)
SFT = dict(steps=4, batch_size=8, max_length=96, seed=3, log_every=2, checkpoint_every=2)
OPT = dict(learning_rate=3e-3, warmup_steps=1)
SAMPLE_PROMPTS = [[1, 5, 9, 12], [1, 7], [1, 3, 3, 8, 20, 4], [1, 30, 2]]
SAMPLE = dict(max_new_tokens=6, temperature=1.0, num_samples=2, seed=7, stop_tokens=())
WORKER_TIMEOUT_S = 300  # catches a hung collective; a normal run takes ~30-90 s


def _job():
  from rlthink.algorithms.sft import SFTConfig
  from rlthink.train import OptimizerConfig
  return SFTConfig(**SFT), OptimizerConfig(**OPT)


def _task(data_dir):
  from rlthink import tasks
  return tasks.get("arithmetic", data_dir=str(data_dir), **TASK)


def _policy(mesh):
  import rlthink
  from rlthink.models.tokenizer import builtin_tokenizer
  return rlthink.init_policy("tiny", seed=0, mesh=mesh, tokenizer=builtin_tokenizer(),
                             num_layers=2)


def _fresh_state(policy):
  from rlthink.train import create_state, make_optimizer
  sft_cfg, opt_cfg = _job()
  return create_state(policy.params, make_optimizer(opt_cfg, sft_cfg.steps), sft_cfg.seed)


def _flat(tree):
  return {jax.tree_util.keystr(path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _first_batch(task, tokenizer, shard_index=0, num_shards=1):
  from rlthink.tasks.pipeline import sft_dataset
  sft_cfg, _ = _job()
  data = sft_dataset(task, "train", tokenizer, batch_size=sft_cfg.batch_size // num_shards,
                     max_length=sft_cfg.max_length, seed=sft_cfg.seed, num_epochs=None,
                     shard_index=shard_index, num_shards=num_shards)
  batch = next(iter(data))
  return {k: batch[k] for k in ("tokens", "loss_mask", "segment_ids")}


def _worker(args) -> None:
  """One process of the 2-process job; process 0 writes what it saw as .npz files for the test."""
  from rlthink.algorithms.sft import run_sft
  from rlthink.train import Checkpointer

  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process CPU collectives
  info = distributed.initialize(f"localhost:{args.port}", 2, args.process_id,
                                initialization_timeout=60)
  assert (info.process_count, info.device_count, info.method) == (2, 4, "explicit"), info
  workdir = distributed.prepare_workdir(args.workdir)
  mesh = sharding.make_mesh(MESH_SHAPE)
  task = _task(args.data_dir)
  sft_cfg, opt_cfg = _job()
  policy = _policy(mesh)
  trained, _ = run_sft(policy, task, sft_cfg, opt_cfg, workdir, progress=False)
  outputs = {"params": _flat(distributed.to_host(trained.params))}

  # 1 process -> 2 processes: the one-process run's checkpoint on this mesh.
  restored, meta = Checkpointer(args.reference, policy.config).restore(
      _fresh_state(policy))
  outputs["restored"] = _flat(distributed.to_host(restored))
  outputs["restored_meta"] = {"position": np.asarray(meta["position"])}

  # Sampling over both processes (rows on both hosts, gathered for every process).
  import rlthink
  ro = rlthink.sample(policy.replace(params=restored.params), SAMPLE_PROMPTS, **SAMPLE)
  outputs["sampled"] = {"tokens": ro.completion_tokens, "logprobs": ro.logprobs}

  # Each host reads only its slice of the first batch.
  shard_index, num_shards = distributed.data_shard(mesh)
  local = _first_batch(task, policy.tokenizer, shard_index, num_shards)
  outputs["sliced"] = distributed.to_host(distributed.global_batch(local, mesh))
  outputs["sliced"]["num_shards"] = np.asarray(num_shards)
  if distributed.is_main_process():
    for name, arrays in outputs.items():
      np.savez(os.path.join(workdir, f"{name}.npz"), **arrays)
  distributed.barrier("test_worker_done")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, reference, data_dir, log_dir):
  """Starts both processes, fails on a non-zero exit or after WORKER_TIMEOUT_S (a hung
  collective), killing the other process; returns their logs."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID, distributed.ENV_MODE):
    env.pop(name, None)
  procs, logs = [], []
  for i in range(2):
    logs.append(open(os.path.join(log_dir, f"process_{i}.log"), "w+"))
    procs.append(subprocess.Popen(
        [sys.executable, __file__, "--process_id", str(i), "--port", str(port), "--workdir",
         str(workdir), "--reference", str(reference), "--data_dir", str(data_dir)],
        env=env, stdout=logs[i], stderr=subprocess.STDOUT))
  deadline = time.monotonic() + WORKER_TIMEOUT_S
  failed = None
  while any(p.poll() is None for p in procs) and failed is None:
    failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
    if time.monotonic() > deadline:
      failed = "timeout"
    time.sleep(0.5)
  failed = failed if failed is not None else next(
      (i for i, p in enumerate(procs) if p.returncode != 0), None)
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  texts = []
  for log in logs:
    log.seek(0)
    texts.append(log.read())
    log.close()
  if failed is not None:
    tails = "\n".join(f"--- process {i} ---\n{t[-4000:]}" for i, t in enumerate(texts))
    reason = "timed out" if failed == "timeout" else f"process {failed} exited non-zero"
    pytest.fail(f"2-process job failed ({reason})\n{tails}")
  return texts


def _metrics(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_two_processes_match_one_process_and_checkpoints_cross_restore(tmp_path):
  from rlthink.algorithms.sft import run_sft
  from rlthink.train import Checkpointer

  data_dir = tmp_path / "data"
  task = _task(data_dir)
  task.examples("train")  # build the dataset once, before two processes read it
  sft_cfg, opt_cfg = _job()
  one_mesh = sharding.make_mesh(MESH_SHAPE, jax.devices()[:4])
  one_dir = tmp_path / "one"
  policy = _policy(one_mesh)
  trained, _ = run_sft(policy, task, sft_cfg, opt_cfg, str(one_dir), progress=False)
  one_params = _flat(trained.params)
  one_restored = Checkpointer(str(one_dir), policy.config).restore(
      _fresh_state(policy))[0]
  one_state = _flat(one_restored)

  two_dir = tmp_path / "two"
  _run_two_processes(two_dir, one_dir, data_dir, tmp_path)

  # The same job, the same global batches: the same parameters (up to reduction order).
  two_params = dict(np.load(two_dir / "params.npz"))
  assert two_params.keys() == one_params.keys()
  for key, value in one_params.items():
    np.testing.assert_allclose(two_params[key], value, rtol=2e-5, atol=2e-6, err_msg=key)
  moved = max(float(np.abs(value - _flat(policy.params)[key]).max())
              for key, value in one_params.items())
  assert moved > 1e-3  # training did change the parameters
  # Only process 0 logged, and it logged what the one-process run did.
  one_log = _metrics(one_dir / "metrics.jsonl")
  two_log = _metrics(two_dir / "metrics.jsonl")
  assert [m["step"] for m in two_log] == [m["step"] for m in one_log] == [1, 2, 3, 4]
  np.testing.assert_allclose([m["sft/loss"] for m in two_log], [m["sft/loss"] for m in one_log],
                             rtol=1e-5)

  # 1 -> 2 processes: the one-process checkpoint restored exactly on the 2-process mesh.
  restored = dict(np.load(two_dir / "restored.npz"))
  assert restored.keys() == one_state.keys()
  for key, value in one_state.items():
    np.testing.assert_array_equal(restored[key], value, err_msg=key)
  assert int(np.load(two_dir / "restored_meta.npz")["position"]) == sft_cfg.steps

  # The same params and seed sample the same rollouts on one process and on two.
  import rlthink
  one_ro = rlthink.sample(policy.replace(params=one_restored.params), SAMPLE_PROMPTS, **SAMPLE)
  sampled = dict(np.load(two_dir / "sampled.npz"))
  np.testing.assert_array_equal(sampled["tokens"], one_ro.completion_tokens)
  np.testing.assert_allclose(sampled["logprobs"], one_ro.logprobs, atol=1e-5)

  # 2 -> 1 process (on another mesh shape): the 2-process checkpoint restored exactly.
  other_mesh = sharding.make_mesh((1, 4, 2))
  ckpt = Checkpointer(str(two_dir), policy.config)
  assert ckpt.latest_step() == sft_cfg.steps
  state, meta = ckpt.restore(_fresh_state(_policy(other_mesh)))
  assert meta["position"] == sft_cfg.steps
  assert state.params["embedding"].sharding.mesh.shape == other_mesh.shape
  for key, value in _flat(state.params).items():
    np.testing.assert_array_equal(value, two_params[key], err_msg=key)

  # Each host read half of the first batch; together they are the one-process batch's rows.
  sliced = dict(np.load(two_dir / "sliced.npz"))
  assert int(sliced.pop("num_shards")) == 2
  full = _first_batch(task, policy.tokenizer)
  for key, value in full.items():
    assert sliced[key].shape == value.shape
  rows = lambda b: sorted(map(bytes, np.concatenate(
      [b["tokens"], b["loss_mask"], b["segment_ids"]], axis=1).astype(np.int32)))
  assert rows(sliced) == rows(full)


# ------------------------------------------------------------------------------------------------
# Start-up from flags and the environment (no processes started).

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


def test_one_process_is_a_no_op():
  assert distributed.resolve({}) == ("single", None)
  assert distributed.resolve({"RLTHINK_NUM_PROCESSES": "1"}) == ("single", None)
  assert distributed.resolve(dict(SLURM_ENV, SLURM_NTASKS="1")) == ("single", None)
  assert distributed.resolve(dict(SLURM_ENV, RLTHINK_DISTRIBUTED="off")) == ("single", None)
  info = distributed.initialize()  # this test process: one process, nothing to start
  assert (info.process_count, info.process_index, info.method) == (1, 0, "single")
  assert info.device_count == info.local_device_count == len(jax.devices())
  assert distributed.is_main_process()


def test_logging_on_one_process_keeps_the_level():
  import logging
  root = logging.getLogger()
  handlers, level = root.handlers[:], root.level
  try:
    distributed.configure_logging(logging.DEBUG)
    assert root.level == logging.DEBUG  # process 0 logs at the asked level
    assert "[process" not in root.handlers[0].formatter._fmt  # no tag on one process
  finally:
    root.handlers[:] = handlers
    root.setLevel(level)


def test_explicit_settings_from_environment_and_flags():
  env = {"RLTHINK_COORDINATOR": "10.0.0.2:8476", "RLTHINK_NUM_PROCESSES": "4",
         "RLTHINK_PROCESS_ID": "3", "RLTHINK_LOCAL_DEVICE_IDS": "0,1,2,3"}
  assert distributed.resolve(env) == ("explicit", {
      "coordinator_address": "10.0.0.2:8476", "num_processes": 4, "process_id": 3,
      "local_device_ids": [0, 1, 2, 3]})
  method, kwargs = distributed.resolve(env, coordinator_address="host0:1234", process_id=0)
  assert method == "explicit"
  assert (kwargs["coordinator_address"], kwargs["process_id"]) == ("host0:1234", 0)


@pytest.mark.parametrize("env, kwargs, message", [
    ({"RLTHINK_NUM_PROCESSES": "2"}, {}, "missing: --coordinator / RLTHINK_COORDINATOR, "
     "--process_id / RLTHINK_PROCESS_ID"),
    ({}, {"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "must be in [0, 2)"),
    ({}, {"coordinator_address": "no-port", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"RLTHINK_NUM_PROCESSES": "two"}, {}, "RLTHINK_NUM_PROCESSES='two' must be an integer"),
    ({"RLTHINK_LOCAL_DEVICE_IDS": "0;1"}, {}, "comma-separated"),
    ({"RLTHINK_DISTRIBUTED": "yes"}, {}, "RLTHINK_DISTRIBUTED='yes'"),
    ({"RLTHINK_DISTRIBUTED": "off"}, {"num_processes": 2}, "off but 2 processes"),
])
def test_bad_settings_fail_naming_the_flag(env, kwargs, message):
  with pytest.raises(ValueError) as e:
    distributed.resolve(env, **kwargs)
  assert message in str(e.value)


def test_clusters_are_left_to_jax_detection():
  # SLURM fills coordinator / count / id; RLTHINK_LOCAL_DEVICE_IDS keeps every GPU of the node.
  method, kwargs = distributed.resolve(dict(SLURM_ENV, RLTHINK_LOCAL_DEVICE_IDS="0,1"))
  assert method == "slurm"
  assert kwargs == {"coordinator_address": None, "num_processes": None, "process_id": None,
                    "local_device_ids": [0, 1]}
  # A partial explicit setting inside SLURM overrides just that value.
  method, kwargs = distributed.resolve(SLURM_ENV, coordinator_address="gpu01:9999")
  assert (method, kwargs["coordinator_address"]) == ("slurm", "gpu01:9999")
  ompi = {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}
  assert distributed.resolve(ompi)[0] == "ompi"
  assert distributed.resolve({}, on_tpu_vm=True)[0] == "tpu"
  assert distributed.resolve({"RLTHINK_DISTRIBUTED": "cluster"})[0] == "cluster"
  # SLURM without a job step (the bare sbatch script) is not a multi-process run.
  assert distributed.resolve({k: v for k, v in SLURM_ENV.items()
                              if k != "SLURM_STEP_NODELIST"}) == ("single", None)


# ------------------------------------------------------------------------------------------------
# Which slice of the batch each process reads.

@pytest.mark.parametrize("grid, expected", [
    # (data, fsdp, tensor) grid of process indices -> {process: (shard_index, num_shards)}
    ([[[0, 0], [1, 1]]], {0: (0, 2), 1: (1, 2)}),             # fsdp across hosts
    ([[[0, 0, 1, 1]]], {0: (0, 1), 1: (0, 1)}),               # tensor across hosts: all read all
    ([[[0], [0]], [[1], [1]]], {0: (0, 2), 1: (1, 2)}),       # data across hosts
    ([[[0], [1]], [[2], [3]]], {p: (p, 4) for p in range(4)}),
    ([[[0, 0]], [[1, 1]], [[0, 0]], [[1, 1]]], None),          # not contiguous
])
def test_batch_shard_of_process(grid, expected):
  grid = np.asarray(grid)
  if expected is None:
    with pytest.raises(ValueError, match="not contiguous"):
      distributed.batch_shard_of_process(grid, 0)
    return
  for process, shard in expected.items():
    assert distributed.batch_shard_of_process(grid, process) == shard


def test_shard_batch_puts_the_global_batch_on_the_mesh():
  from rlthink.train import shard_batch
  mesh = sharding.make_mesh((2, 2, 2))
  batch = {"tokens": np.arange(8 * 5, dtype=np.int32).reshape(8, 5), "weight": np.float32(2.0)}
  out = shard_batch(batch, mesh)
  assert out["tokens"].sharding == sharding.batch_sharding(mesh, (8, 5))
  np.testing.assert_array_equal(np.asarray(out["tokens"]), batch["tokens"])
  for shard in out["tokens"].addressable_shards:  # each device holds its own rows
    np.testing.assert_array_equal(np.asarray(shard.data), batch["tokens"][shard.index])
  assert float(out["weight"]) == 2.0
  # jax.Arrays already on the mesh pass through; others are moved to the batch sharding.
  assert shard_batch(out, mesh)["tokens"] is out["tokens"]
  moved = shard_batch({"tokens": jax.numpy.asarray(batch["tokens"])}, mesh)["tokens"]
  assert moved.sharding == out["tokens"].sharding
  # One process: global_batch of the local batch is the same global array.
  assert distributed.data_shard(mesh) == (0, 1)
  local = distributed.global_batch({"tokens": batch["tokens"]}, mesh)["tokens"]
  assert local.sharding == out["tokens"].sharding
  np.testing.assert_array_equal(np.asarray(local), batch["tokens"])


# ------------------------------------------------------------------------------------------------
# Mesh choice.

SEVEN_B = get_preset("qwen2.5-7b")  # hidden 3584 = 7 * 2^9, 28 heads, mlp 18944
TINY = get_preset("tiny")           # hidden 128, 4 heads, mlp 384


@pytest.mark.parametrize("devices, config, kwargs, expected", [
    (8, TINY, {}, (1, 8, 1)),                        # memory unknown: all FSDP
    (6, TINY, {}, (3, 2, 1)),                        # 3 neither divides 128 nor 4 heads: data
    (64, SEVEN_B, {"devices_per_host": 8}, (1, 64, 1)),
    # 7.6B params * 16 bytes = 122 GB: at most 40 GB per 80 GB GPU -> fsdp 4, data 2.
    (8, SEVEN_B, {"device_memory_bytes": 80e9}, (2, 4, 1)),
    # A small model fits everywhere: pure data parallelism.
    (8, TINY, {"device_memory_bytes": 16e9}, (8, 1, 1)),
    # hidden 96 = 3 * 32: FSDP takes 32 of 64 devices, tensor (4 heads) the other 2 within a host.
    (64, ModelConfig(hidden_size=96, num_heads=4, num_kv_heads=2, intermediate_size=256),
     {"devices_per_host": 8}, (1, 32, 2)),
])
def test_auto_mesh_shape(devices, config, kwargs, expected):
  shape = sharding.auto_mesh_shape(devices, config, **kwargs)
  assert shape == expected
  sharding.check_mesh_shape(shape, config)


def test_make_mesh_with_a_config_chooses_or_checks_the_shape():
  mesh = sharding.make_mesh(None, config=TINY)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert dict(sharding.make_mesh(None).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  with pytest.raises(ValueError, match="tensor=8 does not divide num_heads=4"):
    sharding.make_mesh((1, 1, 8), config=TINY)
  with pytest.raises(ValueError, match="fsdp=3 does not divide hidden_size=128"):
    sharding.make_mesh((1, 3, 1), jax.devices()[:3], config=TINY)
  with pytest.raises(ValueError, match="needs 12 devices, but 8"):
    sharding.make_mesh((3, 4, 1), config=TINY)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  for flag in ("--process_id", "--port"):
    parser.add_argument(flag, type=int, required=True)
  for flag in ("--workdir", "--reference", "--data_dir"):
    parser.add_argument(flag, required=True)
  _worker(parser.parse_args())
