"""Continuous batching: many more requests than decode rows, each finished row refilled at once.

`generate` is one XLA program per (model, mesh, shapes, static options), like `engine.generate`,
but its decode batch is a fixed number of slots and the requests (request i * num_samples + j is
sample j of prompt i) are many more. Rows of a long-tailed length distribution no longer wait
for the longest one:

1. The first `slots` requests start together: their prompts are prefilled in one batch, as the
   static engine does, and copied into their slots (one prefill per prompt, `num_samples` slots).
2. A `lax.while_loop` runs one decode step over every slot. A slot whose request stops (a stop
   token or its length limit) takes the next request in order as soon as its prompt is
   prefilled: the prompt's keys and values are copied from the pool of prefilled prompts into
   the slot's cache row (at most `refills_per_step` slots a step), and the slot's next step
   feeds the prompt's last token.
3. Meanwhile the next `prefill_prompts` prompts are prefilled into a second buffer inside the
   loop, `prefill_chunk` tokens of each per step, so a long prompt never stalls the decode;
   once the pool is used up, that buffer becomes the pool. Every sample of a prompt is copied
   from its one prefill.

The cache has one write column for all slots (the decoder's cache index): each decode step writes
every slot's key and value there, and a refilled slot's prompt is placed to end just before it
(the slot's older columns are masked off). RoPE positions count a row's valid slots, so where a
request sits in the cache changes none of its numbers, and the Pallas decode kernel reads only
the columns a row holds. When the write column reaches the end of the cache, every row moves
left by `margin` columns (a copy of the cache every `margin` steps; an outer loop).

Randomness: completion position t of request r draws with `engine.token_keys(seed, r, t)`, as the
static engine's row r does at step t, so a request's tokens depend on the seed, its index and its
prompt only: not on its slot, the step it started at, the slot count or the mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rlthink import sharding
from rlthink.models import decoder
from rlthink.models.config import ModelConfig
from rlthink.sampling import engine
from rlthink.sampling.slots import Layout, cond_update, copy_rows, kv_map, place


def _generate(params, cache: dict, prompt_tokens: jax.Array, prompt_mask: jax.Array,
              num_requests: jax.Array, row_limits: jax.Array, seed: jax.Array,
              temperature: jax.Array, top_p: jax.Array, stop_tokens: jax.Array, *,
              config: ModelConfig, mesh: Mesh | None, max_new_tokens: int, num_samples: int,
              lay: Layout, prefill_prompts: int, refills_per_step: int, greedy: bool,
              use_temperature: bool, top_k: int | None, use_top_p: bool, pad_id: int,
              decode_kernel: bool = False, kernel_settings: tuple = ()):
  """Samples every request of a queue with `slots` decode rows (the cache's batch).

  Args:
    params: as `engine.generate` (best from `engine.params_for_sampling`).
    cache: an empty decode cache of `slots` rows and `lay.cache_len` columns; donated.
    prompt_tokens: int32[B', P] left-padded prompts, B' >= the prompts of the queue plus
      `prefill_prompts` rows of padding; prompt_mask: bool[B', P].
    num_requests: int32 scalar R: requests 0 .. R - 1 (request r is sample r % num_samples of
      prompt r // num_samples); at most B' * num_samples minus the padding.
    row_limits: int32[N] the most new tokens of each request (<= max_new_tokens), N = the
      output rows (>= R).
    seed, temperature, top_p, stop_tokens, the static options: as `engine.generate`.
    kernel_settings: `engine.kernel_settings()` when decode_kernel (a compile-cache key).

  Returns:
    ({"tokens", "logprobs", "sampling_logprobs": [N, C] in request order, "lengths": int32[N],
      "stopped": bool[N], "steps": int32[] decode steps run}, the final cache).
  """
  del kernel_settings
  slots = cache["valid"].shape[0]
  n, c = row_limits.shape[0], max_new_tokens
  g, f = prefill_prompts, min(refills_per_step, slots)
  p, width, s_len = lay.prompt_len, lay.prefix_len, lay.cache_len
  per_layer = isinstance(cache["k"], tuple)
  batch = lambda x: sharding.constrain(x, ("batch",) + (None,) * (x.ndim - 1), mesh)
  options = dict(greedy=greedy, use_temperature=use_temperature, top_k=top_k,
                 use_top_p=use_top_p, mesh=mesh)
  num_prompts = -(-num_requests // num_samples)

  # Prompt prefixes (all but the last token), left-padded to `width` columns.
  prefix = jnp.pad(prompt_tokens[:, :-1], ((0, 0), (width - (p - 1), 0)),
                   constant_values=pad_id)
  prefix_mask = jnp.pad(prompt_mask[:, :-1], ((0, 0), (width - (p - 1), 0)))
  prefix_len = jnp.sum(prefix_mask, axis=1).astype(jnp.int32)
  last_token = prompt_tokens[:, -1]

  # 1. The first `slots` requests: one batched prefill, as the static engine's.
  first = -(-slots // num_samples)
  if p > 1:
    start_cache = decoder.init_cache(config, first, p - 1, per_layer=per_layer)
    _, start_cache = decoder.forward(config, params, prompt_tokens[:first, :-1],
                                     attention_mask=prompt_mask[:first, :-1], cache=start_cache,
                                     heads=(), mesh=mesh)
    rows_of = lambda x, axis: jnp.repeat(x, num_samples, axis=axis)[
        (slice(None),) * axis + (slice(0, slots),)]
    kv = kv_map(lambda big, small, ax: place(big, rows_of(small, ax), ax, width - (p - 1)),
                 cache, start_cache)
    valid = jax.lax.dynamic_update_slice(cache["valid"], rows_of(start_cache["valid"], 0),
                                         (0, width - (p - 1)))
    cache = dict(cache, **kv, valid=valid)
  cache = dict(cache, index=jnp.int32(width))
  row_request = jnp.arange(slots, dtype=jnp.int32)
  live = batch(row_request < num_requests)

  # Two banks of `g` prefilled prompts (`width` columns) in one cache of 2g rows: bank
  # `pool_bank` is the pool slots copy from, the other the buffer being prefilled. Taking the
  # buffer as the pool flips the index, so no step copies either bank.
  banks = decoder.init_cache(config, 2 * g, width, per_layer=per_layer)

  out = {"tokens": jnp.full((n, c), pad_id, jnp.int32),
         "logprobs": jnp.zeros((n, c), jnp.float32),
         "sampling_logprobs": jnp.zeros((n, c), jnp.float32)}
  state = dict(
      cache=cache, banks={k: banks[k] for k in ("k", "v", "valid")}, pool_bank=jnp.int32(0),
      # The pool holds prompts [pool_first, pool_first + g); the buffer prefills
      # [buffer_first, ...) (state 0 idle, 1 running, 2 done) at chunk `buffer_chunk`.
      pool_first=jnp.int32(slots // num_samples - g), buffer_first=jnp.int32(slots // num_samples),
      buffer_state=jnp.int32(0), buffer_chunk=jnp.int32(0),
      request=batch(row_request), position=batch(jnp.zeros((slots,), jnp.int32)),
      token=batch(last_token[row_request // num_samples]), live=live,
      next_request=jnp.minimum(jnp.int32(slots), num_requests),
      out=out, lengths=jnp.zeros((n,), jnp.int32), stopped=jnp.zeros((n,), bool),
      steps=jnp.int32(0))
  chunks = width // lay.chunk

  def take_buffer(st):
    """The pool is used up and the buffer is prefilled: the buffer becomes the pool."""
    used_up = st["next_request"] >= jnp.minimum(num_requests, (st["pool_first"] + g) * num_samples)
    swap = used_up & (st["buffer_state"] == 2)
    return dict(st, pool_bank=jnp.where(swap, 1 - st["pool_bank"], st["pool_bank"]),
                pool_first=jnp.where(swap, st["buffer_first"], st["pool_first"]),
                buffer_first=jnp.where(swap, st["buffer_first"] + g, st["buffer_first"]),
                buffer_state=jnp.where(swap, 0, st["buffer_state"]))

  def start_buffer(st):
    """An idle buffer starts on the next prompts, from the first chunk holding a token."""
    start = (st["buffer_state"] == 0) & (st["buffer_first"] < num_prompts)
    longest = jnp.max(jax.lax.dynamic_slice_in_dim(prefix_len, st["buffer_first"], g))
    first_chunk = (width - longest) // lay.chunk
    bank = st["banks"]
    buffer_rows = (jnp.arange(2 * g) // g) != st["pool_bank"]
    valid = jnp.where(start & buffer_rows[:, None], False, bank["valid"])
    state_now = jnp.where(first_chunk >= chunks, 2, 1)
    return dict(st, banks=dict(bank, valid=valid),
                buffer_state=jnp.where(start, state_now, st["buffer_state"]),
                buffer_chunk=jnp.where(start, first_chunk, st["buffer_chunk"]))

  def prefill_chunk(st):
    """One chunk of the running buffer's prompts through the decoder (no logits)."""
    def run(st):
      row = (1 - st["pool_bank"]) * g
      take = lambda x, ax: jax.lax.dynamic_slice_in_dim(x, row, g, axis=ax)
      buf = dict(kv_map(take, st["banks"]), valid=take(st["banks"]["valid"], 0),
                 index=st["buffer_chunk"] * lay.chunk)
      at = (st["buffer_first"], st["buffer_chunk"] * lay.chunk)
      tokens = jax.lax.dynamic_slice(prefix, at, (g, lay.chunk))
      mask = jax.lax.dynamic_slice(prefix_mask, at, (g, lay.chunk))
      _, buf = decoder.forward(config, params, tokens, attention_mask=mask, cache=buf,
                               heads=(), mesh=mesh)
      put = lambda big, small, ax: jax.lax.dynamic_update_slice_in_dim(big, small, row, axis=ax)
      banks = dict(kv_map(put, st["banks"], buf),
                   valid=put(st["banks"]["valid"], buf["valid"], 0))
      done = st["buffer_chunk"] + 1 >= chunks
      return dict(banks=banks, buffer_chunk=st["buffer_chunk"] + 1,
                  buffer_state=jnp.where(done, 2, 1))
    return cond_update(st["buffer_state"] == 1, run, st, reads=("pool_bank", "buffer_first"),
                        writes=("banks", "buffer_chunk", "buffer_state"))

  def refill(st):
    """Free slots take the next requests whose prompts the pool holds, in request order."""
    free = ~st["live"]
    available = jnp.minimum(num_requests, (st["pool_first"] + g) * num_samples) - st[
        "next_request"]
    count = jnp.minimum(jnp.minimum(jnp.sum(free), available), f)

    def run(st):
      rank = jnp.cumsum(free) - 1
      take = free & (rank < count)
      request = st["next_request"] + rank
      entry = jnp.clip(request // num_samples - st["pool_first"], 0, g - 1)
      rows = jnp.nonzero(take, size=f, fill_value=slots)[0]
      bank_row = st["pool_bank"] * g + entry                      # the slot's prompt's row
      entries = bank_row[jnp.minimum(rows, slots - 1)]
      start = st["cache"]["index"] - width
      cache = st["cache"]
      kv = kv_map(lambda big, pool, ax: copy_rows(big, pool, ax, rows, entries, start, width),
                   cache, st["banks"])
      block = jax.lax.dynamic_update_slice(jnp.zeros_like(cache["valid"]),
                                           st["banks"]["valid"][bank_row], (0, start))
      valid = jnp.where(take[:, None], block, cache["valid"])
      return dict(cache=dict(cache, **kv, valid=valid),
                  request=jnp.where(take, request, st["request"]),
                  position=jnp.where(take, 0, st["position"]),
                  token=jnp.where(take, last_token[jnp.clip(request // num_samples, 0,
                                                            last_token.shape[0] - 1)],
                                  st["token"]),
                  live=st["live"] | take, next_request=st["next_request"] + count)
    return cond_update(count > 0, run, st, reads=("banks", "pool_bank", "pool_first"),
                        writes=("cache", "request", "position", "token", "live",
                                "next_request"))

  def decode(st):
    """One decode step of every slot; finished requests free their slots."""
    outputs, cache = decoder.forward(config, params, st["token"][:, None], cache=st["cache"],
                                     mesh=mesh, decode_kernel=decode_kernel)
    live, request, position = st["live"], st["request"], st["position"]
    keys = engine.token_keys(seed, request, position)
    new, logprob, sampling_lp = engine.select_tokens(outputs["logits"][:, 0], keys, temperature,
                                                     top_p, **options)
    target = jnp.where(live, request, n)                           # n: dropped
    columns = {"tokens": new, "logprobs": logprob, "sampling_logprobs": sampling_lp}
    out = {k: st["out"][k].at[target, position].set(v, mode="drop") for k, v in columns.items()}
    position = position + live
    stop = live & jnp.any(new[:, None] == stop_tokens[None, :], axis=1)
    limit = row_limits[jnp.clip(request, 0, n - 1)]
    finish = live & (stop | (position >= limit))
    return dict(st, cache=cache, out=out, token=new, position=position, live=live & ~finish,
                lengths=st["lengths"].at[target].set(position, mode="drop"),
                stopped=st["stopped"].at[jnp.where(finish, target, n)].set(stop, mode="drop"),
                steps=st["steps"] + 1)

  def work_left(st):
    return jnp.any(st["live"]) | (st["next_request"] < num_requests)

  def step(st):
    # The buffer's prefill writes its bank before the refill reads the pool's: a conditional
    # reading a buffer that a later one updates in place would copy it every step.
    return decode(refill(prefill_chunk(start_buffer(take_buffer(st)))))

  def shift(st):
    """Every row moves left by `margin` columns; the freed columns at the end are invalid."""
    m = lay.margin
    cache = st["cache"]

    def move(x, ax):
      return jnp.roll(x, -m, axis=ax + 2)
    kv = kv_map(move, cache)
    valid = jnp.pad(cache["valid"][:, m:], ((0, 0), (0, m)))
    return dict(cache=dict(cache, **kv, valid=valid, index=cache["index"] - m))

  def outer(st):
    st = jax.lax.while_loop(lambda st: (st["cache"]["index"] < s_len) & work_left(st), step, st)
    return cond_update(work_left(st), shift, st, reads=(), writes=("cache",))

  state = jax.lax.while_loop(work_left, outer, state)
  result = dict(state["out"], lengths=state["lengths"], stopped=state["stopped"],
                steps=state["steps"])
  return result, state["cache"]


_GENERATE_JIT = dict(
    donate_argnames=("cache",),
    static_argnames=("config", "mesh", "max_new_tokens", "num_samples", "lay", "prefill_prompts",
                     "refills_per_step", "greedy", "use_temperature", "top_k", "use_top_p",
                     "pad_id", "decode_kernel", "kernel_settings"))
generate = jax.jit(_generate, **_GENERATE_JIT)
# As engine.generate_cublas: cuBLAS matmuls for many rows per device (see engine.program_for).
generate_cublas = jax.jit(_generate, **_GENERATE_JIT,
                          compiler_options={"xla_gpu_enable_triton_gemm": False})


def program_for(rows_per_device: int):
  """`generate` or, on GPU with at least engine.CUBLAS_MIN_ROWS slots per device,
  `generate_cublas`."""
  if rows_per_device >= engine.CUBLAS_MIN_ROWS and jax.default_backend() == "gpu":
    return generate_cublas
  return generate
