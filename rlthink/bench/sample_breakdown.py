"""Where a decode step's time goes (`rlthink bench sample --breakdown`).

Each part runs `STEPS` times in one jitted `fori_loop` on the benchmark's shapes (batch rows, a
cache of prompt_len - 1 + new_tokens slots, the sampler's weight layout), and is reported in ms
per step, next to the memory floor of a step:

- decode_step_ms: the real decode loop of `rlthink.sample`, from two runs with different
  new_tokens (the difference excludes prefill and per-call costs);
- forward_ms: the decoder's cached forward of one token with the logits head (argmax feeds back);
- trunk_ms: the same without the vocabulary projection (the "hidden" head);
- trunk_short_ms: the trunk over a 16-slot cache (trunk_ms minus this is roughly attention's
  share that grows with the cache);
- sampling_ms: what the loop does with the logits [N, V] (processing, the draw, both log-probs);
- weights_floor_ms / kv_floor_ms: bytes of the matmul weights / of the whole cache read once,
  over the measured bandwidth.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlthink import ops
from rlthink.models import decoder
from rlthink.sampling import engine, processors, sampler

STEPS = 32


def _time(fn, *args, iters: int = 3) -> float:
  """Median seconds of `iters` calls of fn(*args), after one untimed (compiling) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _forward_steps(config, params, cache, token, head: str):
  def body(_, carry):
    cache, token = carry
    out, cache = decoder.forward(config, params, token[:, None], cache=cache, heads=(head,))
    y = out[head][:, 0]
    if head == "hidden":  # a cheap data dependency on the trunk's output
      y = y[:, :8].astype(jnp.float32)
    return cache, jnp.argmax(y, axis=-1).astype(jnp.int32)

  return jax.lax.fori_loop(0, STEPS, body, (cache, token))[1]


def _sampling_steps(logits, keys, temperature, use_temperature: bool):
  def body(i, total):
    x = logits + (i % 2).astype(jnp.float32) * 1e-3  # changes every step: nothing is hoisted
    processed = processors.process_logits(x, temperature if use_temperature else None, None, None)
    new = processors.draw(jax.vmap(jax.random.fold_in, (0, None))(keys, i), processed)
    lp = ops.token_logprobs(x, new)
    if processed is not x:
      lp = lp + ops.token_logprobs(processed, new)
    return total + jnp.sum(lp)

  return jax.lax.fori_loop(0, STEPS, body, jnp.float32(0))


def breakdown(policy, batch: int, args, unroll: bool, hbm_bytes_per_s: float) -> dict:
  """The breakdown fields of one case's record (see the module docstring)."""
  config = policy.config
  slots = args.prompt_len - 1 + args.new_tokens
  params = engine.params_for_sampling(policy.params, config, unroll)
  token = jnp.zeros((batch,), jnp.int32)

  def cache_at(length):  # a full cache whose last STEPS slots are written by the loop
    cache = decoder.init_cache(config, batch, length, per_layer=unroll)
    return dict(cache, valid=jnp.ones((batch, length), bool),
                index=jnp.int32(length - STEPS))

  out = {}
  for name, head, length in (("forward_ms", "logits", slots), ("trunk_ms", "hidden", slots),
                             ("trunk_short_ms", "hidden", STEPS + 16)):
    run = jax.jit(functools.partial(_forward_steps, config, head=head))  # cache not donated:
    cache = cache_at(length)                                            # one copy per call
    out[name] = 1e3 * _time(run, params, cache, token) / STEPS
    del cache

  logits = jax.random.normal(jax.random.key(0), (batch, config.vocab_size), jnp.float32) * 3
  keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(1), jnp.arange(batch))
  use_t = args.temperature != 1.0
  run = jax.jit(functools.partial(_sampling_steps, use_temperature=use_t))
  out["sampling_ms"] = 1e3 * _time(run, logits, keys, jnp.float32(args.temperature)) / STEPS

  rng = np.random.RandomState(batch)
  prompts = rng.randint(0, config.vocab_size, (batch, args.prompt_len)).tolist()
  long_c, short_c = args.new_tokens, max(args.new_tokens // 4, 1)
  options = dict(temperature=args.temperature, stop_tokens=(), unroll_layers=unroll)
  t_long = _time(lambda: sampler.sample(policy, prompts, max_new_tokens=long_c, **options))
  t_short = _time(lambda: sampler.sample(policy, prompts, max_new_tokens=short_c, **options))
  out["decode_step_ms"] = 1e3 * (t_long - t_short) / max(long_c - short_c, 1)

  itemsize = np.dtype(config.dtype).itemsize
  matmul_params = (config.num_layers * (config.layer_params - 2 * config.hidden_size)
                   + config.vocab_size * config.hidden_size)
  kv_bytes = 2 * config.num_layers * config.num_kv_heads * config.head_dim * itemsize
  out["weights_floor_ms"] = 1e3 * matmul_params * itemsize / hbm_bytes_per_s
  out["kv_floor_ms"] = 1e3 * batch * slots * kv_bytes / hbm_bytes_per_s
  return {f"breakdown_{k}": v for k, v in out.items()}
