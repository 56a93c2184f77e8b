"""The jitted train step and the supervised (cross-entropy) loss.

`make_train_step(loss_fn, optimizer, ...)` turns any pure loss
`loss_fn(params, batch, rng) -> (loss, metrics)` into a jitted, sharded step with the train state
donated. Every algorithm (SFT, EI, PPO, GRPO, START, RCRL) supplies only its loss.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlthink import ops, sharding
from rlthink.models import decoder
from rlthink.models.config import ModelConfig
from rlthink.train.state import TrainState, state_shardings

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


# optax >= 0.2.5 renamed tree_l2_norm to tree_norm; the GPU image may carry either.
_tree_norm = getattr(optax.tree_utils, "tree_norm", None) or optax.tree_utils.tree_l2_norm


class NonFiniteLossError(FloatingPointError):
  """Training became non-finite: a NaN or Inf in the loss, the gradients or the updated
  parameters (or in a state about to be saved). Nothing non-finite is ever checkpointed."""


def sft_loss(config: ModelConfig, mesh: Mesh | None = None, chunk_size: int = 256,
             save_probs: bool | None = None) -> LossFn:
  """Next-token cross-entropy over the tokens where `batch["loss_mask"]` is set.

  batch: tokens int32[B, T], loss_mask [B, T] (1 on target tokens: the completion, not the
  prompt), optional attention_mask [B, T], segment_ids and positions [B, T] for packed rows.
  loss_mask[:, t] marks whether token t is predicted (from position t-1).
  The log-probs come from the decoder's "hidden" head through `ops.fused_next_token_logprobs`
  (`chunk_size` positions of float32 logits at a time, bf16 backward matmuls). save_probs: keep
  the softmax for the backward instead of recomputing the logits there; None: keep it when it
  takes at most `ops.SAVE_PROBS_MAX_BYTES` for the (micro-)batch.
  """

  def loss_fn(params, batch, rng):
    del rng
    out, _ = decoder.forward(config, params, batch["tokens"], positions=batch.get("positions"),
                             attention_mask=batch.get("attention_mask"),
                             segment_ids=batch.get("segment_ids"), heads=("hidden",), mesh=mesh)
    logp = ops.fused_next_token_logprobs(
        out["hidden"], decoder.unembedding(config, params), batch["tokens"], chunk_size,
        save_probs)
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    loss = -ops.masked_mean(logp, mask)
    return loss, {"loss": loss, "tokens": jnp.sum(mask)}

  return loss_fn


def _accumulated_grads(loss_fn: LossFn, params, batch: dict, rng, steps: int, frozen=None):
  """((loss, metrics), grads) averaged over `steps` equal micro-batches, scanned so that memory
  holds one micro-batch's activations at a time. `frozen` (when not None) is the loss's 4th
  argument."""
  extra = () if frozen is None else (frozen,)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if steps == 1:
    return grad_fn(params, batch, rng, *extra)
  micro = jax.tree.map(lambda x: x.reshape((steps, x.shape[0] // steps) + x.shape[1:]), batch)

  def body(total, xs):
    micro_batch, key = xs
    return jax.tree.map(jnp.add, total, grad_fn(params, micro_batch, key, *extra)), None

  shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng, *extra)
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  total, _ = jax.lax.scan(body, zero, (micro, jax.random.split(rng, steps)))
  return jax.tree.map(lambda x: x / steps, total)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, state: TrainState,
                    grad_accum_steps: int = 1, frozen=None):
  """Returns jitted `step(state, batch) -> (state, metrics)` with the state donated.

  frozen: a pytree of arrays the loss reads but does not train (a LoRA base, see
  `rlthink.models.lora.Trainable`): an argument of the jitted step that is never donated, passed
  to the loss as `loss_fn(params, batch, rng, frozen)`.

  `state` (a concrete example) fixes the output shardings; put batches on the mesh with
  `shard_batch`. Metrics are device scalars: `loss`, `grad_norm`, plus the loss's own, and
  `finite` (bool): the loss, the gradient norm and every updated parameter are finite (a fused
  on-device reduction; `run_steps` stops on False before anything is saved).
  """

  def step(state: TrainState, batch: dict, frozen=None):
    rng, key = jax.random.split(jax.random.wrap_key_data(state.rng))
    (loss, metrics), grads = _accumulated_grads(loss_fn, state.params, batch, key,
                                                grad_accum_steps, frozen)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = _tree_norm(grads)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   finite=jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params))
    new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                           rng=jax.random.key_data(rng))
    return new_state, metrics

  # Inputs keep the shardings they arrive with (see `shard_batch`); outputs keep the state's.
  jitted = jax.jit(step, out_shardings=(state_shardings(state), None), donate_argnums=0)
  if frozen is None:
    return jitted
  return lambda state, batch: jitted(state, batch, frozen)


def all_finite(tree) -> jax.Array:
  """bool[]: every floating-point value of `tree` is finite (NaN and Inf fail)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
           if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def shard_batch(batch: dict, mesh: Mesh | None) -> dict:
  """Puts a batch on the mesh's devices, batch axis over (data, fsdp).

  Host (numpy) arrays are the GLOBAL batch, identical on every process (each builds it from the
  same seed and data position); each process copies only the rows its own devices hold, so this is
  correct on one host or many. jax.Arrays (e.g. from `rlthink.distributed.global_batch`, where each
  host read only its slice) are moved to the batch sharding; already there, they pass unchanged.
  Scalars are replicated.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, batch)

  def put(x):
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    target = (sharding.batch_sharding(mesh, x.shape) if x.ndim else
              NamedSharding(mesh, PartitionSpec()))  # scalars: replicated
    if isinstance(x, jax.Array):
      return jax.device_put(x, target)
    return jax.make_array_from_callback(x.shape, target, lambda index: x[index])

  return jax.tree.map(put, batch)
