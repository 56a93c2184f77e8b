"""`sample`: checks a request, pads it to cached shapes, runs the jitted engine, builds `Rollouts`.

Everything a user can get wrong is checked first, in numpy, before anything is compiled
(`checks`). Shapes are bucketed so that RL loops (and ragged evaluation batches) reuse compiled
programs: the prompt length P to a power of two (at least 16), the number of prompts to a power
of two that the mesh's batch axes divide. Padding prompts are dropped from the result. With more
requests than `max_slots`, the continuous engine runs (`continuous`), else the static one
(`engine`); `sample_async` returns before the device is done.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlthink import distributed, sharding
from rlthink.models import decoder
from rlthink.sampling import checks, continuous, engine, slots as slot_layout
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
  program: Any            # engine.generate(_cublas) or continuous.generate(_cublas)


def _request(policy, prompts, max_new_tokens, temperature, top_k, top_p, num_samples, seed,
             stop_tokens, unroll_layers, decode_attention, max_slots=None, slot_options=None,
             max_new_tokens_per_request=None) -> _Request:
  config, mesh = policy.config, policy.mesh
  rows = checks.check_prompts(prompts, config.vocab_size, policy.tokenizer)
  if stop_tokens is not None and not isinstance(stop_tokens, (Sequence, np.ndarray)):
    raise ValueError(f"stop_tokens must be a list of token ids (or None, or ()), got "
                     f"{stop_tokens!r}")
  stop_tokens = checks.default_stop_tokens(policy) if stop_tokens is None else tuple(stop_tokens)
  lengths = [len(r) for r in rows]
  longest_index = int(np.argmax(lengths))
  checks.check_options(config, lengths[longest_index], longest_index, max_new_tokens, temperature,
                 top_k, top_p, num_samples, seed, stop_tokens)
  num_prompts = len(rows)
  limits = checks.request_limits(max_new_tokens_per_request, num_prompts * num_samples,
                                 max_new_tokens)
  slots = checks.slots(max_slots, _batch_shards(mesh))
  continuous_mode = slots is not None and num_prompts * num_samples > slots
  if continuous_mode:
    slot_options = slot_options or slot_layout.SlotOptions()
    if not isinstance(slot_options, slot_layout.SlotOptions):
      raise TypeError(f"slot_options must be a rlthink.sampling.SlotOptions, got "
                      f"{type(slot_options).__name__}")

  p = prompt_bucket(max(lengths), max_new_tokens, config.max_seq_len)
  b = batch_bucket(num_prompts, mesh)
  if continuous_mode:  # room for the first slots' prompts and one prefill group past the end
    lay = slot_layout.layout(p, max_new_tokens, slot_options)
    b = max(_next_pow2(num_prompts), -(-slots // num_samples)) + slot_options.prefill_prompts
  pad_id = config.pad_token_id if config.pad_token_id is not None else 0
  tokens = np.full((b, p), pad_id, np.int32)
  mask = np.zeros((b, p), bool)
  for i, r in enumerate(rows):  # left padding: every prompt ends in column p - 1
    tokens[i, p - len(r):] = r
    mask[i, p - len(r):] = True
  stops = np.full(-(-max(len(stop_tokens), 1) // STOP_TOKEN_SLOTS) * STOP_TOKEN_SLOTS, -1,
                  np.int32)
  stops[:len(stop_tokens)] = stop_tokens

  put = (lambda x: jnp.asarray(x)) if mesh is None else (
      lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.shape)))
  if continuous_mode:  # the cache may exceed max_seq_len: positions count valid slots only
    decode_kernel, length = _decode_attention(decode_attention, config, unroll_layers,
                                              lay.cache_len, within_max_seq_len=False)
    cache_config = config.replace(max_seq_len=max(config.max_seq_len, length))
    cache = _empty_cache(cache_config, slots, length, mesh, unroll_layers)
  else:
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
  options = (jnp.uint32(seed), jnp.float32(1.0 if greedy else temperature),
             jnp.float32(1.0 if top_p is None else top_p), jnp.asarray(stops))
  static = dict(config=config, mesh=mesh, max_new_tokens=max_new_tokens, num_samples=num_samples,
                greedy=greedy, use_temperature=not greedy and temperature != 1,
                top_k=None if greedy else top_k,
                use_top_p=top_p is not None and not greedy, pad_id=pad_id,
                decode_kernel=decode_kernel,
                kernel_settings=engine.kernel_settings() if decode_kernel else ())
  if continuous_mode:
    out_rows = _next_pow2(num_prompts) * num_samples  # bucketed: fewer compiles
    row_limits = np.full((out_rows,), max_new_tokens, np.int32)
    row_limits[:limits.size] = limits
    # The prompts are read by every slot (any row may take any request): replicated.
    args = (params, cache, jnp.asarray(tokens), jnp.asarray(mask),
            jnp.int32(num_prompts * num_samples), jnp.asarray(row_limits), *options)
    static.update(lay=lay, prefill_prompts=slot_options.prefill_prompts,
                  refills_per_step=slot_options.refills_per_step)
    program = continuous.program_for(slots // _batch_shards(mesh))
  else:
    row_limits = np.full((b * num_samples,), max_new_tokens, np.int32)
    row_limits[:limits.size] = limits
    args = (params, cache, put(tokens), put(mask), *options, put(row_limits))
    program = engine.program_for(b * num_samples // _batch_shards(mesh))
  return _Request(args, static, tokens, mask, num_prompts, num_samples, program)


DECODE_ATTENTION = ("auto", "xla", "pallas")


def _decode_attention(choice: str, config, unroll_layers: bool, length: int,
                      within_max_seq_len: bool = True) -> tuple[bool, int]:
  """(use the Pallas decode kernel, cache length): the kernel needs per-layer cache buffers, a
  power-of-two head_dim >= 16 (Triton tiles) and a length that is a multiple of 16 (the cache is
  padded up to one, within max_seq_len). "auto" takes it on GPU for 16-bit compute only: the
  float32 path of the kernel (TF32 tensor-core dots) is not what float32 sampling promises."""
  if choice not in DECODE_ATTENTION:
    raise ValueError(f"decode_attention={choice!r} is not one of {DECODE_ATTENTION}")
  padded = -(-length // 16) * 16
  d = config.head_dim
  fits = (unroll_layers and (padded <= config.max_seq_len or not within_max_seq_len)
          and d >= 16 and d & (d - 1) == 0)
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
           unroll_layers: bool = True, decode_attention: str = "auto",
           max_slots: int | None = None, slot_options: slot_layout.SlotOptions | None = None,
           max_new_tokens_per_request: Sequence[int] | None = None) -> Rollouts:
  """Samples `num_samples` completions of each prompt with the policy.

  Args:
    policy: a `rlthink.Policy` (its mesh shards the batch over (data, fsdp), heads over tensor).
    prompts: token-id lists of any lengths (or strings, when the policy has a tokenizer).
    max_new_tokens: C, the most tokens sampled per completion.
    temperature: softmax temperature; 0 means greedy (argmax) decoding.
    top_k / top_p: keep only the k most likely tokens / the smallest set of most likely tokens
      with probability >= top_p (applied after the temperature, top-k first). None: no filter.
    num_samples: completions per prompt; the prompt is prefilled once and shared.
    seed: the same seed gives the same rollouts on any mesh, batch composition and slot count.
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
    max_slots: the most rows decoded at once. None (default), or at least as many as the
      requests (len(prompts) * num_samples): one static batch whose loop runs until its longest
      row ends. Fewer: continuous batching (`rlthink.sampling.continuous`): max_slots rows
      (rounded up to a multiple of the mesh's batch shards), each taking the next request as
      soon as its own ends; the same completions, less idle work when lengths differ.
    slot_options: the continuous engine's prefill schedule (`SlotOptions`; None: defaults).
    max_new_tokens_per_request: int[len(prompts) * num_samples], each request's own limit
      (<= max_new_tokens; it then finishes with reason "length"). None: max_new_tokens.

  Returns:
    `Rollouts` with N = len(prompts) * num_samples rows (row i * num_samples + j is sample j of
    prompt i), as numpy arrays. `decode_steps` counts the decode loop's steps.

  Raises:
    ValueError / TypeError before compiling anything, for empty prompts, token ids outside the
    vocabulary, prompts that do not fit the cache with max_new_tokens, or bad options.
  """
  return sample_async(policy, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_k=top_k, top_p=top_p, num_samples=num_samples, seed=seed,
                      stop_tokens=stop_tokens, unroll_layers=unroll_layers,
                      decode_attention=decode_attention, max_slots=max_slots,
                      slot_options=slot_options,
                      max_new_tokens_per_request=max_new_tokens_per_request).result()


class PendingRollouts:
  """Rollouts still being computed on the device: `result()` waits for them (`sample_async`)."""

  def __init__(self, out: dict, req: _Request):
    self._out, self._req, self._rollouts = out, req, None

  def done(self) -> bool:
    """Whether the device has finished (result() would not wait)."""
    return self._rollouts is not None or all(
        x.is_ready() for x in jax.tree.leaves(self._out) if hasattr(x, "is_ready"))

  def result(self) -> Rollouts:
    """The `Rollouts` (numpy), waiting for the device if needed; the same object every call."""
    if self._rollouts is None:  # gathers rows held by other hosts
      self._rollouts = _to_rollouts(distributed.to_host(self._out), self._req)
      self._out = self._req = None  # frees the call's weight copy before a next call makes one
    return self._rollouts


def sample_async(policy, prompts, **options) -> PendingRollouts:
  """`sample` without waiting: checks and dispatches the program, returns at once.

  The host is free while the device samples, e.g. to verify the previous batch's completions:

      pending = sample_async(policy, batches[0], max_new_tokens=256)
      for i in range(len(batches)):
        rollouts = pending.result()
        if i + 1 < len(batches):
          pending = sample_async(policy, batches[i + 1], max_new_tokens=256)  # device busy...
        rewards.append(verify(rollouts))                                       # ...host verifies

  Takes the arguments of `sample` (all but `prompts` by keyword) and raises its errors.
  """
  req = _request(policy, prompts, **_options(**options))
  out, _ = req.program(*req.args, **req.static)
  return PendingRollouts(out, req)


def _options(*, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, num_samples: int = 1, seed: int = 0,
             stop_tokens: Sequence[int] | None = None, unroll_layers: bool = True,
             decode_attention: str = "auto", max_slots: int | None = None,
             slot_options=None, max_new_tokens_per_request=None) -> dict:
  """`sample`'s keyword arguments with their defaults, as `_request` takes them."""
  return dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
              num_samples=num_samples, seed=seed, stop_tokens=stop_tokens,
              unroll_layers=unroll_layers, decode_attention=decode_attention,
              max_slots=max_slots, slot_options=slot_options,
              max_new_tokens_per_request=max_new_tokens_per_request)


def lower_sample(policy, prompts, **options):
  """The `jax.stages.Lowered` program that `sample` would run (same arguments): for inspecting
  the compiled HLO (`.compile().as_text()`), its cost or memory analysis."""
  req = _request(policy, prompts, **_options(**options))
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
