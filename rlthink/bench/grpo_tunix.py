"""tunix's side of `rlthink bench grpo`: the same GRPO iteration with Google's tunix (0.1.7).

The pieces tunix's `GRPOLearner` runs on one colocated mesh, driven directly (no RLCluster, no
metrics loggers): the actor model (`tunix.models.qwen2` / `qwen3`, float32 masters, bf16 compute)
is also the rollout model (tunix shares it when actor and rollout are colocated), sampled by
`tunix.rl.rollout.vanilla_rollout.VanillaRollout` (tunix's `Sampler`) after the weight sync that
`RLCluster.sync_weights` does; advantages by `algo_core.compute_advantages` (the "grpo"
estimator); the update by `tunix.rl.trainer.Trainer` with `algo_core.grpo_loss_fn`, one jitted
step per micro-batch and optax.MultiSteps over the batch (GRPOLearner's mini-batch / micro-batch
split), num_iterations = 1 (no old log-prob forward) and beta = 0 (no reference model).

tunix is optional: `unavailable()` says why it cannot run here (None when it can). Prompts enter
through a tokenizer of registered id lists (`_IdTokenizer`): tunix encodes and decodes nothing
real, and the verifier detokenizes the ids as it does for rlthink.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlthink.bench import iteration

_PAD = -1  # tunix's pad and eos id here: no sampled or prompt id is either


def unavailable() -> str | None:
  """None when tunix can be imported, else the reason (the module that failed to import)."""
  if importlib.util.find_spec("tunix") is None:
    return "tunix is not installed (google-tunix 0.1.7; see the benchmark docs for the wheels)"
  try:
    import tunix.rl.trainer  # noqa: F401  (optional dependency)
    import tunix.rl.rollout.vanilla_rollout  # noqa: F401
  except Exception as e:  # a missing dependency of tunix's import chain
    return f"tunix does not import: {type(e).__name__}: {e}"
  return None


def version() -> str | None:
  try:
    return importlib.metadata.version("google-tunix")
  except importlib.metadata.PackageNotFoundError:
    return None


def tunix_model(config, seed: int = 0):
  """tunix's Qwen2 / Qwen3 nnx model of `config`'s shape (float32 masters, compute in
  config.dtype), initialized like rlthink's random init: tunix draws its MLP kernels as zeros
  and its embedding from N(0, 1) (a model that repeats its last token), so those are redrawn
  (std 1/sqrt(fan_in), embedding std 0.02). Values do not change the work."""
  from flax import nnx  # tunix's module system

  if config.architecture == "qwen2":
    from tunix.models.qwen2 import model as mod  # optional: tunix
    cls = mod.Qwen2
  elif config.architecture == "qwen3":
    from tunix.models.qwen3 import model as mod  # optional: tunix
    cls = mod.Qwen3
  else:
    raise ValueError(f"no tunix model mapped for architecture {config.architecture!r}")
  if config.rope_type != "default" or config.sliding_window is not None:
    raise ValueError("rope scaling / sliding windows are not mapped to tunix")
  tcfg = mod.ModelConfig(
      num_layers=config.num_layers, vocab_size=config.vocab_size, embed_dim=config.hidden_size,
      hidden_dim=config.intermediate_size, num_heads=config.num_heads, head_dim=config.head_dim,
      num_kv_heads=config.num_kv_heads, rope_theta=int(config.rope_theta),
      norm_eps=config.rms_norm_eps, use_tied_embedding=config.tie_embeddings,
      dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))
  model = cls(tcfg, rngs=nnx.Rngs(params=seed))
  key = jax.random.key(seed + 1)
  for i, layer in enumerate(model.layers):
    for j, proj in enumerate((layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)):
      w = proj.kernel
      draw = jax.random.normal(jax.random.fold_in(key, 3 * i + j), w.shape, jnp.float32)
      w[...] = (draw * w.shape[0] ** -0.5).astype(w.dtype)
  table = model.embedder.input_embedding
  table[...] = (table[...].astype(jnp.float32) * 0.02).astype(table.dtype)
  return model


class _IdTokenizer:
  """The methods tunix's TokenizerAdapter needs: each prompt "p<i>" encodes to registered ids;
  decoding returns "" (the benchmark's verifier detokenizes the ids itself, for both systems)."""

  def __init__(self):
    self.rows: dict[str, list[int]] = {}

  def register(self, prompts: np.ndarray) -> list[str]:
    self.rows = {f"p{i}": [int(t) for t in row] for i, row in enumerate(prompts)}
    return list(self.rows)

  def encode(self, text, **kwargs):
    return self.rows[text]

  def decode(self, ids, **kwargs):
    return ""

  def bos_id(self):
    return None

  def eos_id(self):
    return _PAD

  def pad_id(self):
    return _PAD


class TunixGRPO:
  """tunix's GRPO iteration on `config`'s shape (see the module docstring)."""

  def __init__(self, config, args):
    from tunix.rl import algo_core  # optional: tunix
    from tunix.rl import trainer as rl_trainer  # optional: tunix
    from tunix.rl.grpo import grpo_learner  # optional: tunix
    from tunix.rl.rollout import base_rollout, vanilla_rollout  # optional: tunix
    from tunix.sft import peft_trainer  # optional: tunix

    self.args = args
    rows = args.prompts * args.group
    self.accum = rows // args.micro
    self.model = tunix_model(config)
    self.tokenizer = _IdTokenizer()
    cache = base_rollout.CacheConfig(cache_size=args.prompt_len + args.new_tokens,
                                     num_layers=config.num_layers,
                                     num_kv_heads=config.num_kv_heads, head_dim=config.head_dim)
    self.rollout = vanilla_rollout.VanillaRollout(self.model, self.tokenizer, cache)
    self.rollout_config = lambda seed: base_rollout.RolloutConfig(
        max_tokens_to_generate=args.new_tokens, max_prompt_length=args.prompt_len,
        kv_cache_size=args.prompt_len + args.new_tokens, temperature=1.0, top_p=1.0,
        top_k=None, seed=jax.random.key(seed), eos_tokens=[_PAD], return_logprobs=False)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adam(args.lr, b1=0.9, b2=0.95, eps=1e-8))
    training = peft_trainer.TrainingConfig(
        eval_every_n_steps=10 ** 9, gradient_accumulation_steps=self.accum if self.accum > 1
        else None)
    self.trainer = rl_trainer.Trainer(self.model, optimizer, training,
                                      custom_checkpoint_metadata_fn=dict)
    algo = grpo_learner.GRPOConfig(num_generations=args.group, num_iterations=1, beta=0.0,
                                   epsilon=0.2, loss_agg_mode="sequence-mean-token-mean")
    algo.temperature = 1.0  # GRPOLearner copies it from the rollout config

    def loss_fn(model, train_example, algo_config):
      return algo_core.grpo_loss_fn(model, train_example, algo_config=algo_config,
                                    pad_id=_PAD, eos_id=_PAD)

    self.trainer.with_loss_fn(loss_fn, has_aux=True)
    self.trainer.with_gen_model_input_fn(lambda x: {"train_example": x, "algo_config": algo})
    self.train_step, _ = self.trainer.jit_train_and_eval_step(cache_nnx_graph=True)
    self.example = grpo_learner.TrainExample
    self.advantages = algo_core.compute_advantages

  def iteration(self, prompts: np.ndarray, verify, seed: int) -> dict:
    from flax import nnx  # tunix's module system: loads only when tunix runs

    args = self.args
    clock = iteration.PhaseClock()
    # RLCluster.sync_weights (without its resharding: one device, the actor is the rollout model)
    self.rollout.update_params(nnx.state(self.trainer.model, nnx.Param))
    keys = self.tokenizer.register(np.repeat(prompts, args.group, axis=0))  # tunix expands
    out = self.rollout.generate(keys, self.rollout_config(seed))
    completions = np.stack([np.asarray(t) for t in out.tokens])
    clock.lap("sample")
    if completions.shape != (len(keys), args.new_tokens):
      raise RuntimeError(f"tunix returned completions of shape {completions.shape}, expected "
                         f"{(len(keys), args.new_tokens)}: the benchmark forces every token")
    rewards = verify(completions.tolist(), args.group)
    clock.lap("verify")
    clock.times["old_logprobs_s"] = 0.0  # num_iterations = 1: none
    advantages = self.advantages(rewards, args.group)
    prompt_ids = np.asarray(out.left_padded_prompt_tokens)
    examples = []
    for i in range(self.accum):
      rows = slice(i * args.micro, (i + 1) * args.micro)
      p, c = jnp.asarray(prompt_ids[rows]), jnp.asarray(completions[rows])
      examples.append(self.example(
          prompt_ids=p, prompt_mask=p != _PAD, completion_ids=c, completion_mask=c != _PAD,
          ref_per_token_logps=None, advantages=jnp.asarray(advantages[rows]),
          old_per_token_logps=None))
    jax.block_until_ready(examples)
    clock.lap("prepare")
    for example in examples:  # the trainer's loop: one jitted step per micro-batch
      loss, _, grad_norm = self.train_step(example)
    loss, grad_norm = jax.device_get((loss, grad_norm))
    clock.lap("update")
    return dict(clock.times, total_s=clock.total, loss_last_micro=float(loss),
                grad_norm_last_micro=float(grad_norm), reward_mean=float(np.mean(rewards)))
