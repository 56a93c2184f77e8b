"""The jitted rollout program: prefill once per prompt, then a `lax.while_loop` decode.

`generate` is one XLA program per (model, mesh, shapes, static options):

1. Prefill: all but the last prompt token of each (left-padded) prompt go through the decoder into
   a prompt-length KV cache, once per prompt.
2. The prompt cache is repeated `num_samples` times along the batch and written into the front of
   the donated decode cache (N = prompts * num_samples rows, P - 1 + C slots).
3. Decode: a `while_loop` whose step feeds the previous token (first the last prompt token), samples
   the next one per row and records it with its log-probs; it stops after C steps or as soon as
   every row has sampled a stop token.

Each row draws with its own key, `fold_in(fold_in(key(seed), row), step)`, so a row's tokens depend
only on the seed, its row index and its inputs: not on the batch size, the padding rows or the mesh.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rlthink import ops, sharding
from rlthink.models import decode, decode_attention, decode_matvec, decoder, lora
from rlthink.models.config import ModelConfig
from rlthink.sampling import processors

_log = logging.getLogger(__name__)


def token_keys(seed: jax.Array, requests: jax.Array, positions: jax.Array) -> jax.Array:
  """The key of each row's next draw: fold_in(fold_in(key(seed), request), position).

  requests, positions: int[N] (the request's index in the call, the completion position being
  drawn). Both engines draw with these keys, so a completion depends only on the seed, its
  request index and its inputs: not on the batch, the slot it ran in, the step or the mesh.
  """
  return jax.vmap(jax.random.fold_in)(request_keys(seed, requests),
                                      positions.astype(jnp.uint32))


def request_keys(seed: jax.Array, requests: jax.Array) -> jax.Array:
  """fold_in(key(seed), request) for int requests [N]: the per-request part of `token_keys`."""
  base = jax.random.key(seed)
  return jax.vmap(jax.random.fold_in, (None, 0))(base, requests.astype(jnp.uint32))


def select_tokens(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array,
                  *, greedy: bool, use_temperature: bool, top_k: int | None, use_top_p: bool,
                  mesh: Mesh | None):
  """The next token of each row from its float32 logits [N, V]: (int32[N] token, float32[N]
  log-prob at temperature 1, float32[N] log-prob under the processed distribution; 0 for
  greedy, a point mass)."""
  n = logits.shape[0]
  if greedy:
    new = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return new, ops.token_logprobs(logits, new), jnp.zeros((n,), jnp.float32)
  processed = processors.process_logits(logits, temperature if use_temperature else None,
                                        top_k, top_p if use_top_p else None)
  new, sampling_lp = processors.draw_with_logprob(keys, processed, mesh)
  logprob = sampling_lp if processed is logits else ops.token_logprobs(logits, new)
  return new, logprob, sampling_lp


@functools.partial(jax.jit, static_argnames=("config", "unroll", "fuse"))
def params_for_sampling(params, config: ModelConfig, unroll: bool = True, fuse: bool = False):
  """The parameters as the decode loop reads them best; changes no number.

  Weights, embeddings and biases in the compute dtype (the decoder casts them at every use
  anyway; with float32 master weights the loop would otherwise read 4 bytes per parameter per
  step, not 2); norm scales unchanged (applied in float32). With `unroll`, the stacked layers split
  into per-layer buffers (`decode.unstack_layers`), so no matmul in the loop reads a slice of a
  stacked array, each weight stored input axis minor (`decode.transpose_for_decode`; `fuse`:
  q/k/v and gate/up concatenated, for a mesh without a tensor axis). LoRA adapters
  (`rlthink.models.lora`) are merged into their weights. A program of its own: inside
  `generate`, XLA would sink these copies back into the loop body.
  """
  dtype = jnp.dtype(config.dtype)
  params = lora.merge(params, dtype)

  def cast(path, x):
    if getattr(path[-1], "key", None) == "scale" or not jnp.issubdtype(x.dtype, jnp.floating):
      return x
    return x.astype(dtype)

  params = jax.tree_util.tree_map_with_path(cast, params)
  if not unroll:
    return params
  return decode.transpose_for_decode(decode.unstack_layers(params), fuse=fuse)


# The most of a device's memory the gathered sampling weights may take (`gather_fsdp`).
GATHER_MEMORY_FRACTION = 0.5


def gather_fsdp(params, mesh: Mesh | None, device_memory: float | None = None):
  """The parameters with their `fsdp` sharding undone (all-gathered once), `tensor` kept.

  Decoding reads every weight at every step: weights left sharded over `fsdp` are all-gathered
  inside the decode loop, once per step (measured: qwen2.5-1.5b on 2 GPUs ran 3.8x slower per
  step than after this gather). Gathered before the loop, each device holds the whole
  compute-dtype model (divided by the tensor axis) and decodes its rows data-parallel.

  When that copy would take more than GATHER_MEMORY_FRACTION of a device's memory
  (`device_memory` bytes, default: what the first device reports; unknown on CPU), the params stay
  sharded and a warning says so: decoding then gathers per step (slow; give the mesh a `tensor`
  axis for models that large).
  """
  if mesh is None or mesh.shape.get("fsdp", 1) == 1:
    return params
  if device_memory is None:
    device_memory = sharding._device_memory(mesh.devices.flat[0])
  gathered = sum(x.nbytes for x in jax.tree.leaves(params)) / mesh.shape.get("tensor", 1)
  if device_memory is not None and gathered > GATHER_MEMORY_FRACTION * device_memory:
    _log.warning("sampling keeps the weights fsdp-sharded: gathered they would take %.1f GB per "
                 "device (of %.1f GB), so each decode step all-gathers them (slow); a mesh with "
                 "a tensor axis decodes models this large faster", gathered / 1e9,
                 device_memory / 1e9)
    return params

  def without_fsdp(x):
    def drop(axes):
      if isinstance(axes, tuple):
        axes = tuple(a for a in axes if a != "fsdp")
        return axes or None
      return None if axes == "fsdp" else axes
    return PartitionSpec(*map(drop, getattr(x.sharding, "spec", PartitionSpec())))

  leaves, treedef = jax.tree.flatten(params)
  return _regather(treedef, mesh, tuple(without_fsdp(x) for x in leaves))(params)


@functools.lru_cache(maxsize=16)
def _regather(treedef, mesh: Mesh, specs: tuple):
  shardings = jax.tree.unflatten(treedef, [NamedSharding(mesh, s) for s in specs])
  return jax.jit(lambda p: p, out_shardings=shardings)


def _put_prompt_cache(cache: dict, prompt_cache: dict, num_samples: int) -> dict:
  """Writes the prefilled prompt cache (P - 1 slots) repeated per sample into `cache`."""
  def put(big, small, batch_axis):
    small = jnp.repeat(small, num_samples, axis=batch_axis)
    return jax.lax.dynamic_update_slice(big, small.astype(big.dtype), (0,) * big.ndim)

  per_layer = isinstance(cache["k"], tuple)  # [B, K, S, D] per layer, or stacked [L, B, K, S, D]
  kv = {name: jax.tree.map(lambda big, small: put(big, small, 0 if per_layer else 1),
                           cache[name], prompt_cache[name]) for name in ("k", "v")}
  return dict(cache, **kv, valid=put(cache["valid"], prompt_cache["valid"], 0),
              index=prompt_cache["index"])


def kernel_settings() -> tuple:
  """The decode kernels' tuning knobs as a hashable value (see `_generate`'s kernel_settings):
  decode_matvec's LAYER_KERNELS, KERNEL_MIN_SIZE, MAX_ROWS and decode_attention's
  WHOLE_ROW_PROGRAMS, WHOLE_ROW_TILINGS."""
  return (tuple(sorted(decode_matvec.LAYER_KERNELS.items())),
          tuple(sorted(decode_matvec.KERNEL_MIN_SIZE.items())), decode_matvec.MAX_ROWS,
          decode_attention.WHOLE_ROW_PROGRAMS,
          tuple(sorted(decode_attention.WHOLE_ROW_TILINGS.items())))


def _generate(params, cache: dict, prompt_tokens: jax.Array, prompt_mask: jax.Array,
              seed: jax.Array, temperature: jax.Array, top_p: jax.Array, stop_tokens: jax.Array,
              row_limits: jax.Array, *, config: ModelConfig, mesh: Mesh | None,
              max_new_tokens: int, num_samples: int,
              greedy: bool, use_temperature: bool, top_k: int | None, use_top_p: bool,
              pad_id: int, decode_kernel: bool = False, kernel_settings: tuple = ()):
  """Samples `max_new_tokens` tokens (or until a stop token) for every row.

  Args:
    params: the decoder parameters, best from `params_for_sampling` (stacked or per-layer).
    cache: an empty decode cache (`decoder.init_cache`, per_layer for per-layer params) of
      N = B * num_samples rows and at least P - 1 + max_new_tokens slots; donated.
    prompt_tokens: int32[B, P] left-padded prompts; prompt_mask: bool[B, P]. A row with an empty
      mask is padding: it is marked finished from the start.
    seed: uint32 scalar; temperature, top_p: float32 scalars; stop_tokens: int32[K] (-1 = unused).
    row_limits: int32[N] the most tokens of each row (<= max_new_tokens): a row that reaches its
      limit finishes ("length"), as every row does at max_new_tokens.
    greedy: argmax decoding (temperature, top-k and top-p are then unused).
    use_temperature / top_k / use_top_p: which processors apply. With none of them the sampling
      distribution is the policy's, and its log-probs are not computed twice.
    decode_kernel: decode steps attend with the Pallas kernel over the filled slots only
      (`decoder.forward`'s option; per-layer params and a cache length multiple of 16).
    kernel_settings: `kernel_settings()` when the program is traced: the decode kernels' module
      settings, read while tracing; as a static argument, changing them compiles anew instead
      of reusing a program traced with the old ones. Not read otherwise.

  Returns:
    ({"tokens", "logprobs", "sampling_logprobs": [N, C], "lengths": int32[N],
      "stopped": bool[N], "steps": int32[] decode steps run}, the final cache).
  """
  b, p = prompt_tokens.shape
  n, c = b * num_samples, max_new_tokens
  batch = lambda x: sharding.constrain(x, ("batch",) + (None,) * (x.ndim - 1), mesh)

  # 1-2. Prefill all prompt tokens but the last, once per prompt; share the cache across samples.
  if p > 1:
    prompt_cache = decoder.init_cache(config, b, p - 1, per_layer="layers" not in params)
    _, prompt_cache = decoder.forward(config, params, prompt_tokens[:, :-1],
                                      attention_mask=prompt_mask[:, :-1], cache=prompt_cache,
                                      heads=(), mesh=mesh)
    cache = _put_prompt_cache(cache, prompt_cache, num_samples)
  last_token = batch(jnp.repeat(prompt_tokens[:, -1], num_samples))
  padding_row = batch(jnp.repeat(~jnp.any(prompt_mask, axis=1), num_samples))
  row_keys = batch(request_keys(seed, jnp.arange(n)))
  row_limits = batch(row_limits)
  options = dict(greedy=greedy, use_temperature=use_temperature, top_k=top_k,
                 use_top_p=use_top_p, mesh=mesh)

  # 3. Decode. (Checking "every row finished" only every k steps, with an inner fixed-trip-count
  # loop, measured no faster on the GPU: the device is busy with the step's kernels throughout,
  # see docs/benchmarks.md.)
  def step_fn(state):
    step, cache, token, done, stopped, lengths, out = state
    outputs, cache = decoder.forward(config, params, token[:, None], cache=cache, mesh=mesh,
                                     decode_kernel=decode_kernel)
    logits = outputs["logits"][:, 0]                                 # float32[N, V]
    keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, step)   # token_keys(seed, row, step)
    new, logprob, sampling_lp = select_tokens(logits, keys, temperature, top_p, **options)
    live = ~done
    new = jnp.where(live, new, pad_id)
    columns = {"tokens": new, "logprobs": jnp.where(live, logprob, 0.0),
               "sampling_logprobs": jnp.where(live, sampling_lp, 0.0)}
    out = {k: jax.lax.dynamic_update_slice(out[k], v[:, None], (0, step))
           for k, v in columns.items()}
    stop = live & jnp.any(new[:, None] == stop_tokens[None, :], axis=1)
    lengths = lengths + live
    return (step + 1, cache, new, done | stop | (lengths >= row_limits), stopped | stop, lengths,
            out)

  def cond_fn(state):
    step, _, _, done, _, _, _ = state
    return (step < c) & ~jnp.all(done)

  out = {"tokens": jnp.full((n, c), pad_id, jnp.int32),
         "logprobs": jnp.zeros((n, c), jnp.float32),
         "sampling_logprobs": jnp.zeros((n, c), jnp.float32)}
  out = jax.tree.map(batch, out)
  state = (jnp.int32(0), cache, last_token, padding_row, jnp.zeros((n,), bool),
           jnp.zeros((n,), jnp.int32), out)
  steps, cache, _, _, stopped, lengths, out = jax.lax.while_loop(cond_fn, step_fn, state)
  return dict(out, lengths=lengths, stopped=stopped, steps=steps), cache


_GENERATE_JIT = dict(
    donate_argnames=("cache",),
    static_argnames=("config", "mesh", "max_new_tokens", "num_samples", "greedy",
                     "use_temperature", "top_k", "use_top_p", "pad_id", "decode_kernel",
                     "kernel_settings"))
generate = jax.jit(_generate, **_GENERATE_JIT)
# The same program with every matmul on cuBLAS instead of XLA's Triton GEMMs: faster for the
# decode step's small matmuls once a device has many rows (qwen2.5-0.5b on an H200: 1.05x at 64
# rows, 1.07x at 256), slower for one row (0.78x; docs/benchmarks.md). See `program_for`.
generate_cublas = jax.jit(_generate, **_GENERATE_JIT,
                          compiler_options={"xla_gpu_enable_triton_gemm": False})
CUBLAS_MIN_ROWS = 64  # rows per device from which `program_for` picks generate_cublas


def program_for(rows_per_device: int):
  """`generate` or, on GPU with at least CUBLAS_MIN_ROWS rows per device, `generate_cublas`."""
  if rows_per_device >= CUBLAS_MIN_ROWS and jax.default_backend() == "gpu":
    return generate_cublas
  return generate
