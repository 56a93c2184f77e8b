"""The train state: an explicit pytree of everything a step reads and writes."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlthink import sharding


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  """params: model parameters (float32 masters); opt_state: optax state; step: int32[];
  rng: uint32[2] raw PRNG key data (plain arrays, so orbax saves them as-is)."""

  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array

  def replace(self, **changes) -> "TrainState":
    return dataclasses.replace(self, **changes)


def _mesh_of(params) -> Mesh | None:
  leaf = jax.tree.leaves(params)[0]
  return leaf.sharding.mesh if isinstance(leaf.sharding, NamedSharding) else None


def create_state(params, optimizer: optax.GradientTransformation, seed: int,
                 copy: bool = True) -> TrainState:
  """A fresh state on the params' devices: optimizer moments take their param's sharding, scalars
  are replicated over the mesh.

  The train step donates its state, so by default the state gets its own copy of `params`
  (the caller's arrays, e.g. a policy kept as the reference, stay valid). `copy=False` saves the
  memory when the caller no longer needs them.
  """
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  mesh = _mesh_of(params)
  if mesh is None:  # committed to the params' device, so the first step does not recompile
    shardings = jax.sharding.SingleDeviceSharding(next(iter(jax.tree.leaves(params)[0].devices())))
  else:
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = sharding.optimizer_state_shardings(optimizer, params)
    shardings = TrainState(params=param_shardings, opt_state=opt_shardings, step=replicated,
                           rng=replicated)

  def create(params):
    if copy:
      params = jax.tree.map(jnp.copy, params)
    return TrainState(params=params, opt_state=optimizer.init(params),
                      step=jnp.zeros((), jnp.int32),
                      rng=jax.random.key_data(jax.random.key(seed)))

  return jax.jit(create, out_shardings=shardings, donate_argnums=() if copy else 0)(params)


def state_shardings(state: TrainState):
  """The sharding of every leaf of a concrete state (used as jit in/out shardings)."""
  return jax.tree.map(lambda x: x.sharding, state)
