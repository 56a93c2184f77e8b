"""`rlthink bench ppo`: the time and memory of one PPO iteration, split by phase.

One iteration of `rlthink.algorithms.ppo` on a randomly initialized preset: a policy, a separate
value model (or a shared trunk with --value_model shared) and a frozen reference, all float32
masters with bf16 compute by default. Random prompts of a fixed length; every completion runs to
--new_tokens (no stop tokens) so the work is fixed; a synthetic reward (the fraction of even token
ids in the completion) stands in for a verifier. The phases, each ended by a device sync:

  rollout    `rlthink.sample` (prefill + KV-cache decode)
  reward     the synthetic reward on the host
  score      forward passes of the policy, reference and value model over prompt | completion
  advantage  per-token rewards with the KL penalty, GAE, whitening
  train      --epochs passes of minibatch updates (clipped policy + value loss, AdamW both):
             the state, optimizer and step `ppo.run_ppo` trains with (`init_training`)

The iteration runs --iterations times (default 2); the record reports the last one (compiled:
the first pays compilation, reported as compile_s = first total - last total). Peak memory is the
device allocator's high-water mark of the whole run, the largest over the local devices and
per device (None on CPU). One JSON line on stdout (and
appended to --out):

    {"bench": "ppo", "model", "prompts", "prompt_len", "new_tokens", "epochs", "minibatch",
     "time_rollout_s", "time_reward_s", "time_score_s", "time_advantage_s", "time_train_s",
     "time_iteration_s", "rollout_tok_s", "train_tok_s", "peak_memory_gb", "device", ...}

    python -m rlthink.bench.ppo --model qwen2.5-0.5b --prompts 256 --new_tokens 256 --out b.jsonl
    python -m rlthink.bench.ppo --quick          # tiny model on CPU, about a minute

Runs on the accelerator image: imports jax, flax, optax and rlthink's JAX code only (no gin,
tensorflow_datasets, grain or tensorboardX).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from rlthink import sampling, sharding, train
from rlthink.algorithms import positions, ppo, rl_math, scoring
from rlthink.bench import common
from rlthink.models import decoder
from rlthink.models.presets import get_preset
from rlthink.policy import Policy


def parse_args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench ppo", description=__doc__.split("\n")[0])
  p.add_argument("--model", help="preset name (default qwen2.5-0.5b; tiny with --quick)")
  p.add_argument("--prompts", type=int, help="prompts per iteration (default 256; 8 quick)")
  p.add_argument("--prompt_len", type=int, help="tokens per prompt (default 128; 16 quick)")
  p.add_argument("--new_tokens", type=int, help="tokens per completion (default 256; 16 quick)")
  p.add_argument("--epochs", type=int, default=2, help="PPO epochs over the rollout batch")
  p.add_argument("--minibatch", type=int, help="rows per optimizer step (default 16; 4 quick)")
  p.add_argument("--score_batch", type=int, help="rows per scoring forward (default 32; 8 quick)")
  p.add_argument("--value_model", choices=("separate", "shared"), default="separate")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype (parameters stay float32)")
  p.add_argument("--remat", action="store_true", help="rematerialize each layer in the backward")
  p.add_argument("--iterations", type=int, default=2, help="iterations run; the last is reported")
  p.add_argument("--lr", type=float, default=1e-6)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--mesh", help="mesh sizes data,fsdp,tensor (default: automatic, with >1 device)")
  p.add_argument("--quick", action="store_true", help="tiny model, tiny shapes, CPU: a smoke test")
  p.add_argument("--out", help="append the JSON line to this file")
  args = p.parse_args(argv)
  defaults = (dict(model="tiny", prompts=8, prompt_len=16, new_tokens=16, minibatch=4,
                   score_batch=8) if args.quick else
              dict(model="qwen2.5-0.5b", prompts=256, prompt_len=128, new_tokens=256,
                   minibatch=16, score_batch=32))
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if args.iterations < 1 or args.prompts < 1 or args.minibatch < 1:
    p.error("--iterations, --prompts and --minibatch must be >= 1")
  return args


def init_training(policy, cfg, lr: float, mesh):
  """(state, train step) exactly as `ppo.run_ppo` builds them: `ppo.make_ppo_optimizer` (each
  model's gradients clipped to norm 1, then `rlthink.train`'s AdamW at `lr`),
  `rlthink.train.create_state` on a copy of `ppo.initial_params` (moments in their param's
  shardings), `rlthink.train.make_train_step` over `ppo.ppo_loss` (state donated)."""
  steps = cfg.iterations * cfg.steps_per_iteration
  optimizer = ppo.make_ppo_optimizer(train.OptimizerConfig(learning_rate=lr, clip_norm=1.0), cfg,
                                     steps)
  state = train.create_state(ppo.initial_params(policy, cfg), optimizer, cfg.seed)
  return state, train.make_train_step(ppo.ppo_loss(policy.config, cfg, mesh), optimizer, state)


def run(args) -> dict:
  config = get_preset(args.model, dtype=args.dtype, param_dtype="float32", remat=args.remat,
                      max_seq_len=max(args.prompt_len + args.new_tokens,
                                      get_preset(args.model).max_seq_len))
  mesh = None
  if len(jax.devices()) > 1 or args.mesh:
    shape = None if args.mesh is None else [int(x) for x in args.mesh.split(",")]
    mesh = sharding.make_mesh(shape, config=config)
  cfg = ppo.PPOConfig(prompts_per_iteration=args.prompts, samples_per_prompt=1,
                      max_new_tokens=args.new_tokens, epochs=args.epochs,
                      minibatch_size=args.minibatch, score_batch_size=args.score_batch,
                      value_model=args.value_model, seed=args.seed, iterations=args.iterations)
  policy = Policy(config, decoder.init_params(config, jax.random.key(args.seed), mesh=mesh), mesh)
  reference = scoring.frozen_reference(policy.params, config)  # train-state copies are donated
  state, update = init_training(policy, cfg, args.lr, mesh)
  policy = policy.replace(params=None)  # its float32 weights live on only in the train state
  kl = rl_math.init_kl_controller(cfg.kl_coef)
  rng = np.random.default_rng(args.seed)
  prompts = rng.integers(10, config.vocab_size, (args.prompts, args.prompt_len)).tolist()

  records = []
  for it in range(args.iterations):
    times, clock = {}, time.perf_counter()

    def lap(name):
      nonlocal clock
      now = time.perf_counter()
      times[f"time_{name}_s"] = now - clock
      clock = now

    current = policy.replace(params=ppo.strip_value_head(state.params["policy"]))
    ro = sampling.sample(current, prompts, max_new_tokens=args.new_tokens, temperature=1.0,
                         seed=args.seed + it, stop_tokens=())
    lap("rollout")
    completions = np.where(ro.completion_mask, ro.completion_tokens % 2 == 0, False)
    rewards = completions.sum(1) / np.maximum(ro.completion_mask.sum(1), 1)
    lap("reward")
    scores, stats = ppo.score_rollouts(config, state.params, reference, ro, cfg, mesh)
    lap("score")
    batch, adv_stats = ppo.add_advantages(scores, rewards, kl.coef, cfg)
    lap("advantage")
    rows, steps = batch["tokens"].shape[0], cfg.steps_per_iteration
    for s in range(steps):
      pick = positions.minibatch_rows(rows, cfg.minibatch_size, s, [args.seed, it])
      state, metrics = update(state, train.shard_batch({k: v[pick] for k, v in batch.items()},
                                                       mesh))
    metrics = jax.device_get(metrics)
    lap("train")
    kl = rl_math.update_kl_controller(kl, adv_stats["kl"], rows, cfg.kl_target, cfg.kl_horizon)
    times["time_iteration_s"] = sum(times.values())
    records.append(dict(times, reward_mean=float(rewards.mean()), train_steps=steps,
                        loss=float(metrics["loss"]), **stats, **adv_stats))

  last = records[-1]
  seq = args.prompt_len + args.new_tokens
  record = {"bench": "ppo", "model": args.model, "prompts": args.prompts,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "epochs": args.epochs,
            "minibatch": args.minibatch, "value_model": args.value_model, "dtype": args.dtype,
            "mesh": None if mesh is None else dict(mesh.shape), "remat": args.remat,
            "iterations": args.iterations, **last,
            "rollout_tok_s": args.prompts * args.new_tokens / last["time_rollout_s"],
            "train_tok_s": last["train_steps"] * args.minibatch * seq / last["time_train_s"],
            "compile_s": (records[0]["time_iteration_s"] - last["time_iteration_s"]
                          if len(records) > 1 else None),
            "num_params": config.num_params}
  peaks = [common.peak_memory_bytes(d) for d in jax.local_devices()]
  record["peak_memory_gb"] = None if None in peaks else max(peaks) / 1e9
  record["peak_memory_gb_per_device"] = None if None in peaks else [p / 1e9 for p in peaks]
  record.update(common.device_info())
  return record


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  common.emit(run(args), args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
