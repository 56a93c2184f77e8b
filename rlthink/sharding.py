"""The device mesh and the one table that maps logical axis names to mesh axes.

Every parameter and the main activations carry logical axis names (`batch`, `length`, `embed`,
`heads`, ...). `RULES` below is the only place that decides how they are laid out on the mesh
(`data`, `fsdp`, `tensor`): FSDP shards parameters' `embed` over `fsdp`, tensor parallelism shards
`heads` / `kv_heads` / `mlp` / `vocab` over `tensor`, and the batch goes over (`data`, `fsdp`).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlthink.models.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")

# Ordered logical -> mesh rules. A mesh axis is used at most once per array; a logical axis whose
# size does not divide by its mesh axes is replicated instead (e.g. 2 KV heads on 4-way tensor).
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("layers", None),
    ("embed", "fsdp"),       # parameters: FSDP
    ("act_embed", None),     # activations: the batch is already over fsdp
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)
_RULES = dict(RULES)
_log = logging.getLogger(__name__)


def make_mesh(shape: Sequence[int] | None = None, devices: Sequence[jax.Device] | None = None,
              config: ModelConfig | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh.

  Args:
    shape: sizes of (data, fsdp, tensor). One entry may be -1 (filled from the device count).
      None means `auto_mesh_shape` when `config` is given, else (1, -1, 1): everything FSDP.
    devices: defaults to all of `jax.devices()` (of every process, on several hosts).
    config: the model the mesh is for; when given, the shape is checked against its dimensions
      (`check_mesh_shape`).
  """
  devices = list(jax.devices() if devices is None else devices)
  if shape is None and config is not None:
    shape = auto_mesh_shape(len(devices), config, devices_per_host=_devices_per_host(devices),
                            device_memory_bytes=_device_memory(devices[0]))
    _log.info("automatic mesh for %d devices: %s", len(devices), dict(zip(MESH_AXES, shape)))
  shape = (1, -1, 1) if shape is None else tuple(int(s) for s in shape)
  if len(shape) != 3:
    raise ValueError(f"mesh shape must name 3 sizes for {MESH_AXES}, got {shape}")
  if sum(s == -1 for s in shape) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {shape}: sizes must be positive, at most one may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape} does not divide the {len(devices)} devices")
    shape = tuple(len(devices) // known if s == -1 else s for s in shape)
  if math.prod(shape) != len(devices):
    raise ValueError(f"mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                     f"but {len(devices)} are available")
  if config is not None:
    check_mesh_shape(shape, config)
  grid = np.asarray(devices, dtype=object).reshape(shape)
  try:
    auto = (jax.sharding.AxisType.Auto,) * 3
    return Mesh(grid, MESH_AXES, axis_types=auto)
  except (AttributeError, TypeError):  # older JAX: every axis is Auto
    return Mesh(grid, MESH_AXES)


def check_mesh_shape(shape: Sequence[int], config: ModelConfig) -> None:
  """Raises ValueError when `fsdp` does not divide hidden_size (the `embed` axis it shards) or
  `tensor` does not divide num_heads and intermediate_size. (KV heads and the vocabulary that
  `tensor` does not divide are replicated by design, see `RULES`.)"""
  data, fsdp, tensor = shape
  problems = []
  if config.hidden_size % fsdp:
    problems.append(f"fsdp={fsdp} does not divide hidden_size={config.hidden_size}")
  for name in ("num_heads", "intermediate_size"):
    if getattr(config, name) % tensor:
      problems.append(f"tensor={tensor} does not divide {name}={getattr(config, name)}")
  if problems:
    raise ValueError(f"mesh shape {dict(zip(MESH_AXES, shape))} does not fit the model: "
                     f"{'; '.join(problems)}. Choose another MeshSpec.shape, or None for an "
                     "automatic one.")


def auto_mesh_shape(num_devices: int, config: ModelConfig, *,
                    devices_per_host: int | None = None,
                    device_memory_bytes: float | None = None,
                    bytes_per_param: float = 16.0) -> tuple[int, int, int]:
  """A (data, fsdp, tensor) shape for `num_devices` devices and the model `config`.

  FSDP first, tensor parallelism when the heads allow it, data parallelism for the rest:
  candidates are fsdp dividing hidden_size and tensor dividing num_heads and intermediate_size
  (and the devices of one host, so tensor-parallel collectives stay on fast links).
  - Device memory unknown: shard the model as far as possible (largest fsdp * tensor, preferring
    fsdp), e.g. (1, n, 1) whenever hidden_size divides by n.
  - `device_memory_bytes` known: the least sharding whose share of the train state
    (`bytes_per_param` * parameters; 16 = float32 params, grads and two Adam moments; add more for
    a reference or value model) takes at most half a device, the rest going to `data`, which
    communicates least. When nothing fits, the largest sharding (with a warning).
  """
  if num_devices < 1:
    raise ValueError(f"num_devices={num_devices} must be >= 1")
  per_host = math.gcd(num_devices, devices_per_host or num_devices)
  candidates = []  # (fsdp * tensor, fsdp, tensor)
  for tensor in _divisors(per_host):
    if config.num_heads % tensor or config.intermediate_size % tensor:
      continue
    for fsdp in _divisors(num_devices // tensor):
      if config.hidden_size % fsdp == 0:
        candidates.append((fsdp * tensor, fsdp, tensor))
  most = max(candidates)  # (1, 1, 1) is always a candidate
  if device_memory_bytes is None:
    _, fsdp, tensor = most
  else:
    state = bytes_per_param * config.num_params
    fitting = [c for c in candidates if state / c[0] <= device_memory_bytes / 2]
    if fitting:  # least sharding; among equals, more fsdp
      _, fsdp, tensor = min(fitting, key=lambda c: (c[0], -c[1]))
    else:
      _, fsdp, tensor = most
      _log.warning("the train state (%.3g GB) may not fit %d devices of %.3g GB even fully "
                   "sharded (fsdp=%d, tensor=%d)", state / 1e9, num_devices,
                   device_memory_bytes / 1e9, fsdp, tensor)
  return num_devices // (fsdp * tensor), fsdp, tensor


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def _devices_per_host(devices: Sequence[jax.Device]) -> int:
  return sum(d.process_index == devices[0].process_index for d in devices)


def _device_memory(device: jax.Device) -> float | None:
  """Bytes an accelerator can allocate (None on CPU, or when the backend does not say)."""
  if device.platform == "cpu":
    return None
  try:
    stats = device.memory_stats() or {}
  except Exception:  # not every backend implements memory_stats
    return None
  return stats.get("bytes_limit")


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec with `RULES`.

  When `shape` and `mesh` are given, a dimension that its mesh axes do not divide is replicated.
  """
  used: set[str] = set()
  spec = []
  for i, name in enumerate(names):
    if name is not None and name not in _RULES:
      raise KeyError(f"logical axis {name!r} has no rule in rlthink.sharding.RULES")
    target = _RULES.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    if shape is not None and mesh is not None:
      # Keep the longest prefix of mesh axes that divides the dimension.
      while axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
        axes = axes[:-1]
    axes = tuple(a for a in axes if mesh is None or mesh.shape[a] > 1) if mesh else axes
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, names: Sequence[str | None], shape: Sequence[int]
                   ) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(names, shape, mesh))


def constrain(x: jax.Array, names: Sequence[str | None], mesh: Mesh | None) -> jax.Array:
  """Annotates an activation with its logical axes (identity without a mesh)."""
  if mesh is None or mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, named_sharding(mesh, names, x.shape))


def tree_shardings(mesh: Mesh, logical_tree, shape_tree):
  """NamedShardings for a pytree, from a matching tree of logical-name tuples and shapes."""
  return jax.tree.map(
      lambda names, s: named_sharding(mesh, names, s.shape), logical_tree, shape_tree,
      is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, (str, type(None))) for n in x))


def batch_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
  """Sharding of an input array whose first axis is the batch."""
  return named_sharding(mesh, ("batch",) + (None,) * (len(shape) - 1), shape)


def optimizer_state_shardings(optimizer, params):
  """Shardings of `optimizer.init(params)` that keep each moment on its param's sharding and
  replicate the scalars (counts) over the params' mesh; None when `params` are on no mesh.

  A plain `jax.jit(optimizer.init)` reads no param value, so nothing ties its outputs to the
  params' devices: on a mesh it would put the whole state on one device.
  """
  leaf = jax.tree.leaves(params)[0]
  if not isinstance(leaf.sharding, NamedSharding):
    return None
  replicated = NamedSharding(leaf.sharding.mesh, PartitionSpec())
  return optax.tree_map_params(optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, params),
                               jax.tree.map(lambda x: x.sharding, params),
                               transform_non_params=lambda _: replicated)
