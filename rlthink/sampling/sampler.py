"""`sample`: checks a request, pads it to cached shapes, runs the jitted engine, builds `Rollouts`.

Everything a user can get wrong is checked here, in numpy, before anything is compiled. Shapes are
bucketed so that RL loops (and ragged evaluation batches) reuse compiled programs: the prompt
length P to a power of two (at least 16), the number of prompts to a power of two that the mesh's
batch axes divide. Padding prompts are dropped from the result.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlthink import distributed, sharding
from rlthink.models import decoder
from rlthink.sampling import engine
from rlthink.sampling.rollouts import Rollouts

MIN_PROMPT_BUCKET = 16
STOP_TOKEN_SLOTS = 8  # stop-token arrays are padded to a multiple of this (fewer recompiles)


def _next_pow2(n: int) -> int:
  return 1 << max(int(n) - 1, 0).bit_length()


def prompt_bucket(longest: int, max_new_tokens: int, max_seq_len: int) -> int:
  """Padded prompt length P: a power of two >= longest (>= 16), cut so that P + C fits."""
  return max(longest, min(_next_pow2(max(longest, MIN_PROMPT_BUCKET)),
                          max_seq_len - max_new_tokens))


def _batch_shards(mesh) -> int:
  """How many ways the mesh splits the rows: its (data, fsdp) size."""
  return 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]


def batch_bucket(num_prompts: int, mesh) -> int:
  """Padded number of prompts: a power of two, a multiple of the mesh's batch shards."""
  shards = _batch_shards(mesh)
  b = max(_next_pow2(num_prompts), shards)
  return -(-b // shards) * shards


def _default_stop_tokens(policy) -> tuple[int, ...]:
  ids = {policy.config.eos_token_id}
  if policy.tokenizer is not None:
    ids.add(getattr(policy.tokenizer, "eos_token_id", None))
  return tuple(sorted(i for i in ids if i is not None))


def _check_prompts(prompts, vocab_size: int, tokenizer) -> list[np.ndarray]:
  if hasattr(prompts, "__array__") and not isinstance(prompts, np.ndarray):  # e.g. a jax.Array
    prompts = np.asarray(prompts)
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)):
    raise TypeError(f"prompts must be a list of token-id lists (or of strings with a tokenizer), "
                    f"got {type(prompts).__name__}")
  if len(prompts) == 0:
    raise ValueError("prompts is empty: give at least one prompt")
  if any(isinstance(p, str) for p in prompts):
    if tokenizer is None:
      raise ValueError("string prompts need a tokenizer: attach one to the policy "
                       "(policy.replace(tokenizer=...)) or pass token ids")
    from rlthink.sampling import text
    prompts = text.encode_prompts(tokenizer, prompts)
  out = []
  for i, p in enumerate(prompts):
    a = np.asarray(p)
    if a.ndim != 1:
      raise ValueError(f"prompt {i} must be a 1-D sequence of token ids, got shape {a.shape}")
    if a.size == 0:
      raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
    if not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"prompt {i} must hold integer token ids, got dtype {a.dtype}")
    if a.min() < 0 or a.max() >= vocab_size:
      bad = int(a[(a < 0) | (a >= vocab_size)][0])
      raise ValueError(f"prompt {i} has token id {bad} outside the vocabulary [0, {vocab_size})")
    out.append(a.astype(np.int32))
  return out


def _check_options(config, longest: int, longest_index: int, max_new_tokens, temperature, top_k,
                   top_p, num_samples, seed, stop_tokens) -> None:
  def is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

  if not is_int(max_new_tokens) or max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
  if not is_int(num_samples) or num_samples <= 0:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
  if not is_int(seed) or not 0 <= seed < 2 ** 32:
    raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
  if not isinstance(temperature, (int, float, np.number)) or not (
      math.isfinite(temperature) and temperature >= 0):
    raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
  if top_k is not None and (not is_int(top_k) or not 1 <= top_k <= config.vocab_size):
    raise ValueError(f"top_k must be None or an int in [1, {config.vocab_size}], got {top_k!r}")
  if top_p is not None and (not isinstance(top_p, (int, float, np.number)) or
                            not 0 < top_p <= 1):
    raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
  for t in stop_tokens:
    if not is_int(t) or not 0 <= t < config.vocab_size:
      raise ValueError(f"stop token {t!r} is not a token id in [0, {config.vocab_size})")
  if longest + max_new_tokens > config.max_seq_len:
    raise ValueError(
        f"prompt {longest_index} has {longest} tokens: with max_new_tokens={max_new_tokens} the "
        f"rollout needs {longest + max_new_tokens} positions, more than the model's "
        f"max_seq_len={config.max_seq_len} (the KV cache's limit); shorten the prompt or "
        "max_new_tokens")


@functools.partial(jax.jit, static_argnames=("config", "batch", "length", "mesh", "per_layer"))
def _empty_cache(config, batch: int, length: int, mesh, per_layer: bool) -> dict:
  cache = decoder.init_cache(config, batch, length)
  cache = {k: sharding.constrain(v, decoder.CACHE_AXES[k], mesh) for k, v in cache.items()}
  if per_layer:
    cache.update(k=tuple(cache["k"]), v=tuple(cache["v"]))
  return cache


@dataclasses.dataclass(frozen=True)
class _Request:
  """A checked, padded request: the engine's arguments and what `Rollouts` needs back."""
  args: tuple
  static: dict
  tokens: np.ndarray      # int32[B, P] padded prompts (B bucketed)
  mask: np.ndarray        # bool[B, P]
  num_prompts: int
  num_samples: int
  program: Any            # engine.generate or generate_cublas (engine.program_for)


def _request(policy, prompts, max_new_tokens, temperature, top_k, top_p, num_samples, seed,
             stop_tokens, unroll_layers, decode_attention) -> _Request:
  config = policy.config
  rows = _check_prompts(prompts, config.vocab_size, policy.tokenizer)
  if stop_tokens is not None and not isinstance(stop_tokens, (Sequence, np.ndarray)):
    raise ValueError(f"stop_tokens must be a list of token ids (or None, or ()), got "
                     f"{stop_tokens!r}")
  stop_tokens = _default_stop_tokens(policy) if stop_tokens is None else tuple(stop_tokens)
  lengths = [len(r) for r in rows]
  longest_index = int(np.argmax(lengths))
  _check_options(config, lengths[longest_index], longest_index, max_new_tokens, temperature,
                 top_k, top_p, num_samples, seed, stop_tokens)

  num_prompts = len(rows)
  p = prompt_bucket(max(lengths), max_new_tokens, config.max_seq_len)
  b = batch_bucket(num_prompts, policy.mesh)
  pad_id = config.pad_token_id if config.pad_token_id is not None else 0
  tokens = np.full((b, p), pad_id, np.int32)
  mask = np.zeros((b, p), bool)
  for i, r in enumerate(rows):  # left padding: every prompt ends in column p - 1
    tokens[i, p - len(r):] = r
    mask[i, p - len(r):] = True
  stops = np.full(-(-max(len(stop_tokens), 1) // STOP_TOKEN_SLOTS) * STOP_TOKEN_SLOTS, -1,
                  np.int32)
  stops[:len(stop_tokens)] = stop_tokens

  mesh = policy.mesh
  put = (lambda x: jnp.asarray(x)) if mesh is None else (
      lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.shape)))
  decode_kernel, length = _decode_attention(decode_attention, config, unroll_layers,
                                            p - 1 + max_new_tokens)
  cache = _empty_cache(config, b * num_samples, length, mesh, unroll_layers)
  greedy = temperature == 0
  top_p = None if top_p is not None and top_p >= 1 else top_p  # 1 keeps every token: no sort
  fuse = unroll_layers and (mesh is None or mesh.shape["tensor"] == 1)
  params = policy.params
  if unroll_layers or config.param_dtype != config.dtype:
    params = engine.params_for_sampling(params, config, unroll_layers, fuse)
  params = engine.gather_fsdp(params, mesh)
  args = (params, cache, put(tokens), put(mask), jnp.uint32(seed),
          jnp.float32(1.0 if greedy else temperature), jnp.float32(1.0 if top_p is None else top_p),
          jnp.asarray(stops))
  static = dict(config=config, mesh=mesh, max_new_tokens=max_new_tokens, num_samples=num_samples,
                greedy=greedy, use_temperature=not greedy and temperature != 1,
                top_k=None if greedy else top_k,
                use_top_p=top_p is not None and not greedy, pad_id=pad_id,
                decode_kernel=decode_kernel,
                kernel_settings=engine.kernel_settings() if decode_kernel else ())
  program = engine.program_for(b * num_samples // _batch_shards(mesh))
  return _Request(args, static, tokens, mask, num_prompts, num_samples, program)


DECODE_ATTENTION = ("auto", "xla", "pallas")


def _decode_attention(choice: str, config, unroll_layers: bool, length: int) -> tuple[bool, int]:
  """(use the Pallas decode kernel, cache length): the kernel needs per-layer cache buffers, a
  power-of-two head_dim >= 16 (Triton tiles) and a length that is a multiple of 16 (the cache is
  padded up to one, within max_seq_len). "auto" takes it on GPU for 16-bit compute only: the
  float32 path of the kernel (TF32 tensor-core dots) is not what float32 sampling promises."""
  if choice not in DECODE_ATTENTION:
    raise ValueError(f"decode_attention={choice!r} is not one of {DECODE_ATTENTION}")
  padded = -(-length // 16) * 16
  d = config.head_dim
  fits = (unroll_layers and padded <= config.max_seq_len and d >= 16 and d & (d - 1) == 0)
  if choice == "pallas" and not fits:
    raise ValueError("decode_attention='pallas' needs unroll_layers=True, a power-of-two "
                     f"head_dim >= 16 (got {d}) and room for a cache of {padded} slots (prompt + "
                     f"max_new_tokens rounded up to a multiple of 16) within "
                     f"max_seq_len={config.max_seq_len}")
  use = choice == "pallas" or (choice == "auto" and fits and jax.default_backend() == "gpu"
                               and jnp.dtype(config.dtype).itemsize == 2)
  return use, padded if use else length


def sample(policy, prompts, *, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, num_samples: int = 1,
           seed: int = 0, stop_tokens: Sequence[int] | None = None,
           unroll_layers: bool = True, decode_attention: str = "auto") -> Rollouts:
  """Samples `num_samples` completions of each prompt with the policy.

  Args:
    policy: a `rlthink.Policy` (its mesh shards the batch over (data, fsdp), heads over tensor).
    prompts: token-id lists of any lengths (or strings, when the policy has a tokenizer).
    max_new_tokens: C, the most tokens sampled per completion.
    temperature: softmax temperature; 0 means greedy (argmax) decoding.
    top_k / top_p: keep only the k most likely tokens / the smallest set of most likely tokens
      with probability >= top_p (applied after the temperature, top-k first). None: no filter.
    num_samples: completions per prompt; the prompt is prefilled once and shared.
    seed: the same seed gives the same rollouts on any mesh and batch composition.
    stop_tokens: a row finishes after sampling one of these ids (kept as its last token). None:
      the model's (and tokenizer's) eos id; () never stops early.
    unroll_layers: compile the layers one by one, each with its own weight and KV-cache buffers
      (a per-call copy of the weights in the compute dtype), so the decode loop never slices a
      stacked array; False runs the scanned stack (one compiled layer: faster compilation).
    decode_attention: "pallas": each decode step attends with the Pallas kernel of
      `rlthink.models.decode_attention`, which reads only the filled cache slots, and with one
      row per device runs the layers' q/k/v and gate/up matmuls as the kernels of
      `rlthink.models.decode_matvec` (residual adds and norms fused in) (GPU; Pallas'
      interpreter elsewhere, for tests); "xla": einsum attention over every cache slot; "auto"
      (default): pallas on GPU with unroll_layers, 16-bit compute and a power-of-two head_dim,
      xla otherwise.

  Returns:
    `Rollouts` with N = len(prompts) * num_samples rows (row i * num_samples + j is sample j of
    prompt i), as numpy arrays.

  Raises:
    ValueError / TypeError before compiling anything, for empty prompts, token ids outside the
    vocabulary, prompts that do not fit the cache with max_new_tokens, or bad options.
  """
  req = _request(policy, prompts, max_new_tokens, temperature, top_k, top_p, num_samples, seed,
                 stop_tokens, unroll_layers, decode_attention)
  out, _ = req.program(*req.args, **req.static)
  return _to_rollouts(distributed.to_host(out), req)  # gathers rows held by other hosts


def lower_sample(policy, prompts, *, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, num_samples: int = 1,
                 seed: int = 0, stop_tokens: Sequence[int] | None = None,
                 unroll_layers: bool = True, decode_attention: str = "auto"):
  """The `jax.stages.Lowered` program that `sample` would run (same arguments): for inspecting
  the compiled HLO (`.compile().as_text()`), its cost or memory analysis."""
  req = _request(policy, prompts, max_new_tokens, temperature, top_k, top_p, num_samples, seed,
                 stop_tokens, unroll_layers, decode_attention)
  return req.program.lower(*req.args, **req.static)


def _to_rollouts(out: dict[str, Any], req: _Request) -> Rollouts:
  tokens, mask, num_prompts, num_samples = req.tokens, req.mask, req.num_prompts, req.num_samples
  n = num_prompts * num_samples
  lengths = np.asarray(out["lengths"][:n], np.int32)
  c = out["tokens"].shape[1]
  return Rollouts(
      prompt_tokens=np.repeat(tokens[:num_prompts], num_samples, axis=0),
      prompt_mask=np.repeat(mask[:num_prompts], num_samples, axis=0),
      completion_tokens=np.asarray(out["tokens"][:n], np.int32),
      completion_mask=np.arange(c)[None, :] < lengths[:, None],
      logprobs=np.asarray(out["logprobs"][:n], np.float32),
      sampling_logprobs=np.asarray(out["sampling_logprobs"][:n], np.float32),
      lengths=lengths,
      stopped=np.asarray(out["stopped"][:n], bool),
      prompt_index=np.repeat(np.arange(num_prompts, dtype=np.int32), num_samples),
      decode_steps=np.asarray(out["steps"], np.int32))
