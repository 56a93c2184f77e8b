"""Multi-host runs on JAX's own multi-controller runtime: the same program on every host.

`initialize()` starts `jax.distributed` from flags or the environment (first match wins):

  explicit   coordinator address, process count and process id, from the arguments (the CLI's
             --coordinator / --num_processes / --process_id) or RLTHINK_COORDINATOR /
             RLTHINK_NUM_PROCESSES / RLTHINK_PROCESS_ID (what launch/gpu_hosts.py sets).
  slurm      an `srun` step with more than one task: JAX reads SLURM_* itself.
  ompi       `mpirun` with more than one rank: JAX reads OMPI_* itself.
  tpu        a Cloud TPU VM (libtpu installed, TPU devices present): JAX asks the TPU metadata
             server for the pod's workers (a single-host TPU VM is a pod of one).
  single     anything else: nothing to start (one process).
RLTHINK_DISTRIBUTED=off forces one process; RLTHINK_DISTRIBUTED=cluster calls
`jax.distributed.initialize()` with no arguments and lets JAX detect the cluster.
RLTHINK_LOCAL_DEVICE_IDS=0,1,... picks the accelerators a process uses. Under SLURM, JAX's default
is one device per process (the task's local id); with one task per node (launch/slurm.py) set it to
every GPU of the node.

Data on many hosts. `rlthink.train.shard_batch` takes the GLOBAL batch as host arrays that every
process builds identically (same seed, same data position) and copies to each process's devices
only the rows those devices hold: correct on one or many hosts, and a resumed run restores the
same data iterator state on every host. To have each host read only its own slice instead, build
the dataset with `shard_index, num_shards = data_shard(mesh)` and `batch_size // num_shards`, and
turn each local batch into a global array with `global_batch(local_batch, mesh)`. A global batch
then holds the same examples as in a one-process run, in another row order (the SFT and RL losses
average over the batch, so they do not depend on it); sequence packing and dropping overlong
examples group examples per host, so those runs see different batches.

Files: the workdir must be a POSIX path that every host sees (NFS, Filestore, a gcsfuse mount);
`prepare_workdir` checks it. Orbax saves and restores checkpoints across hosts (each host writes
its own shards); `MetricsLogger` writes only on process 0; `is_main_process()` guards anything
else a run writes once.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rlthink import sharding

ENV_MODE = "RLTHINK_DISTRIBUTED"
ENV_COORDINATOR = "RLTHINK_COORDINATOR"
ENV_NUM_PROCESSES = "RLTHINK_NUM_PROCESSES"
ENV_PROCESS_ID = "RLTHINK_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "RLTHINK_LOCAL_DEVICE_IDS"
MODES = ("auto", "off", "cluster")
# The variables JAX's own SLURM detection needs (an `srun` step; not the bare sbatch script).
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
  """Where this process stands. method: "single", "explicit", "slurm", "ompi", "tpu", "cluster" or
  "already" (initialized before this call)."""

  process_index: int
  process_count: int
  local_device_count: int
  device_count: int
  method: str
  coordinator_address: str | None = None


def resolve(env: Mapping[str, str], coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None,
            local_device_ids: Sequence[int] | None = None, on_tpu_vm: bool = False
            ) -> tuple[str, dict | None]:
  """Decides how to start (the pure part of `initialize`).

  Returns (method, kwargs for `jax.distributed.initialize`, or None for one process).
  Raises ValueError naming the flag / variable that is missing or malformed.
  """
  mode = env.get(ENV_MODE, "auto") or "auto"
  if mode not in MODES:
    raise ValueError(f"{ENV_MODE}={mode!r}; expected one of {MODES}")
  coordinator = coordinator_address or env.get(ENV_COORDINATOR) or None
  num = num_processes if num_processes is not None else _env_int(env, ENV_NUM_PROCESSES)
  pid = process_id if process_id is not None else _env_int(env, ENV_PROCESS_ID)
  ids = list(local_device_ids) if local_device_ids is not None else _env_ids(env)
  given = {"--coordinator / " + ENV_COORDINATOR: coordinator,
           "--num_processes / " + ENV_NUM_PROCESSES: num,
           "--process_id / " + ENV_PROCESS_ID: pid}
  if mode == "off":
    if num not in (None, 1):
      raise ValueError(f"{ENV_MODE}=off but {num} processes were asked for")
    return "single", None
  if num is not None and num < 1:
    raise ValueError(f"--num_processes / {ENV_NUM_PROCESSES} must be >= 1, got {num}")
  if num is not None and pid is not None and not 0 <= pid < num:
    raise ValueError(f"--process_id / {ENV_PROCESS_ID}={pid} must be in [0, {num})")
  if coordinator is not None and not re.fullmatch(r"\[?[\w.\-:]+\]?:\d+", coordinator):
    raise ValueError(f"--coordinator / {ENV_COORDINATOR}={coordinator!r} must be HOST:PORT, "
                     "e.g. 10.0.0.2:8476 (the address of process 0)")
  if num == 1 and pid in (None, 0):
    return "single", None
  kwargs = {"coordinator_address": coordinator, "num_processes": num, "process_id": pid,
            "local_device_ids": ids}
  if mode == "cluster":
    return "cluster", kwargs
  if all(v is not None for v in given.values()):
    return "explicit", kwargs
  cluster = _detect_cluster(env, on_tpu_vm)
  if cluster is not None:
    return cluster, kwargs
  if any(v is not None for v in given.values()):
    missing = [name for name, v in given.items() if v is None]
    raise ValueError(f"a multi-process run needs all of the coordinator address, process count "
                     f"and process id; missing: {', '.join(missing)} (no SLURM, Open MPI or TPU "
                     "pod environment to fill them in)")
  return "single", None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               initialization_timeout: int = 300) -> DistributedInfo:
  """Starts multi-host JAX when the flags or the environment call for it (see the module doc);
  a no-op for one process. Call it before any other JAX call; calling it again is harmless."""
  if jax.distributed.is_initialized():
    return _info("already")
  method, kwargs = resolve(os.environ, coordinator_address, num_processes, process_id,
                           local_device_ids, on_tpu_vm=_on_tpu_vm())
  if kwargs is None:
    return _info(method)
  _log.info("jax.distributed.initialize via %s: %s", method,
            {k: v for k, v in kwargs.items() if v is not None})
  try:
    jax.distributed.initialize(initialization_timeout=initialization_timeout, **kwargs)
  except RuntimeError as e:
    raise RuntimeError(f"jax.distributed.initialize ({method}) failed: {e}. It must run before "
                       "any other JAX call, and every process must reach the coordinator "
                       f"{kwargs['coordinator_address'] or '(auto-detected)'}") from e
  return _info(method, kwargs["coordinator_address"])


def is_main_process() -> bool:
  """True on process 0: the one process that writes logs, summaries and reports."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` (process 0) and checks that every process sees it: a file process 0 writes
  there must be visible to all. Returns the absolute path.

  Raises:
    RuntimeError: the workdir is not on storage shared by all hosts (names the processes).
  """
  # orbax loads only when a command writes a workdir: the sampler imports this module
  from rlthink.train.checkpoint import ensure_writable
  workdir = os.path.abspath(workdir)
  if jax.process_count() == 1:
    return ensure_writable(workdir)
  token = int(multihost_utils.broadcast_one_to_all(np.random.randint(1 << 30)))
  probe = os.path.join(workdir, f".rlthink_shared_probe_{token}")
  if is_main_process():
    ensure_writable(workdir)
    with open(probe, "w") as f:
      f.write(str(token))
  barrier("rlthink_prepare_workdir_written")
  seen = multihost_utils.process_allgather(np.asarray([os.path.isfile(probe)]))
  barrier("rlthink_prepare_workdir_checked")
  if is_main_process():
    os.remove(probe)
  blind = [i for i, ok in enumerate(np.asarray(seen).reshape(-1)) if not ok]
  if blind:
    raise RuntimeError(f"workdir {workdir!r} is not shared: processes {blind} cannot see a file "
                       "process 0 wrote there. Put the workdir on storage every host mounts "
                       "(NFS, Filestore, a gcsfuse bucket mount).")
  return workdir


def configure_logging(level: int = logging.INFO) -> None:
  """Process 0 logs at `level`; the others log only warnings and errors, tagged with their index."""
  index, count = jax.process_index(), jax.process_count()
  tag = f"[process {index}/{count}] " if count > 1 else ""
  logging.basicConfig(level=level if index == 0 else logging.WARNING,
                      format=f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s", force=True)


def data_shard(mesh: Mesh) -> tuple[int, int]:
  """(shard_index, num_shards): the slice of each global batch this process must read.

  The batch axis is split over (data, fsdp); processes whose devices hold the same rows read the
  same shard (num_shards is 1 when the batch is not split across processes, e.g. tensor
  parallelism across hosts). Pass them to `sft_dataset` / `prompt_dataset` (shard_index=,
  num_shards=) with batch_size = global batch // num_shards.
  """
  grid = np.vectorize(lambda d: d.process_index, otypes=[int])(mesh.devices)
  return batch_shard_of_process(grid, jax.process_index())


def batch_shard_of_process(process_grid: np.ndarray, process_index: int) -> tuple[int, int]:
  """`data_shard` on an int[data, fsdp, tensor] grid of the process index of each mesh device."""
  data, fsdp, _ = process_grid.shape
  row_block = np.arange(data * fsdp).reshape(data, fsdp)  # batch block held by (data, fsdp)
  blocks = {}
  for p in np.unique(process_grid):
    held = sorted({int(row_block[d, f]) for d, f, _ in zip(*np.nonzero(process_grid == p))})
    if held != list(range(held[0], held[-1] + 1)):
      raise ValueError(f"process {p} holds batch blocks {held} of the mesh, which are not "
                       "contiguous: it cannot read one slice of the data. Order the mesh devices "
                       "by process, or pass the global batch to shard_batch instead.")
    blocks[int(p)] = (held[0], len(held))
  if process_index not in blocks:
    raise ValueError(f"process {process_index} has no device in the mesh")
  size = blocks[process_index][1]
  starts = sorted({s for s, _ in blocks.values()})
  # Every process must hold one of num_shards equal, disjoint blocks that tile the batch.
  if {n for _, n in blocks.values()} != {size} or starts != list(range(0, data * fsdp, size)):
    raise ValueError(f"processes hold unequal or overlapping parts of the batch "
                     f"({{process: (first block, blocks)}} = {blocks}); pass the global batch to "
                     "shard_batch instead")
  return starts.index(blocks[process_index][0]), len(starts)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Global arrays from this process's slice (read with `data_shard(mesh)`): {key: [B_local, ...]}
  becomes {key: [B_local * num_shards, ...]} with the batch axis over (data, fsdp)."""
  _, num_shards = data_shard(mesh)
  split = mesh.shape["data"] * mesh.shape["fsdp"]

  def put(name, x):
    x = np.asarray(x)
    shape = (x.shape[0] * num_shards,) + x.shape[1:]
    if shape[0] % split:
      raise ValueError(f"global batch of {name!r} has {shape[0]} rows, which the mesh's "
                       f"data x fsdp = {split} devices do not divide")
    return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, shape), x, shape)

  return {k: put(k, v) for k, v in local_batch.items()}


def to_host(tree: Any) -> Any:
  """numpy copies of every array of `tree`, gathering arrays whose shards live on other hosts.
  A collective when anything is gathered: call it on every process, in the same order."""

  def get(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(get, tree)


# ------------------------------------------------------------------------------------------------


def _info(method: str, coordinator: str | None = None) -> DistributedInfo:
  return DistributedInfo(process_index=jax.process_index(), process_count=jax.process_count(),
                         local_device_count=jax.local_device_count(),
                         device_count=jax.device_count(), method=method,
                         coordinator_address=coordinator)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
  value = env.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} must be an integer") from None


def _env_ids(env: Mapping[str, str]) -> list[int] | None:
  value = env.get(ENV_LOCAL_DEVICE_IDS)
  if value in (None, ""):
    return None
  try:
    return [int(v) for v in value.split(",")]
  except ValueError:
    raise ValueError(f"{ENV_LOCAL_DEVICE_IDS}={value!r} must be comma-separated device ids, "
                     "e.g. 0,1,2,3") from None


def _detect_cluster(env: Mapping[str, str], on_tpu_vm: bool) -> str | None:
  """The managed environment JAX can read its own parameters from, when it runs > 1 process."""
  if all(v in env for v in _SLURM_VARS) and (_env_int(env, "SLURM_NTASKS") or 1) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and (_env_int(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return "ompi"
  return "tpu" if on_tpu_vm else None


def _on_tpu_vm() -> bool:
  """libtpu is installed and TPU chips are attached (and JAX is not pinned to another platform)."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms and "tpu" not in platforms.split(","):
    return False
  return (importlib.util.find_spec("libtpu") is not None and
          bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))
