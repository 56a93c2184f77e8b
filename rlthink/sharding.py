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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


def make_mesh(shape: Sequence[int] | None = None, devices: Sequence[jax.Device] | None = None
              ) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh.

  Args:
    shape: sizes of (data, fsdp, tensor). One entry may be -1 (filled from the device count).
      None means (1, -1, 1): everything FSDP.
    devices: defaults to all of `jax.devices()`.
  """
  devices = list(jax.devices() if devices is None else devices)
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
  grid = np.asarray(devices, dtype=object).reshape(shape)
  try:
    auto = (jax.sharding.AxisType.Auto,) * 3
    return Mesh(grid, MESH_AXES, axis_types=auto)
  except (AttributeError, TypeError):  # older JAX: every axis is Auto
    return Mesh(grid, MESH_AXES)


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
