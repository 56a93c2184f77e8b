"""`rlthink bench grpo`: one GRPO iteration, phase by phase, beside tunix on the same configuration.

The configuration (both systems, one process, one randomly initialized model shape each, float32
master weights, bf16 compute): --prompts random prompts of --prompt_len tokens, --group
completions each (rows = prompts * group) of exactly --new_tokens tokens (no stop token: the work
is fixed), temperature 1; rewards from the arithmetic verifier on the detokenized completions
(`rlthink.bench.iteration`: the same host work for both); group advantages (r - mean) / std; one
on-policy update (ratio 1: old log-probs = the current policy's, no second forward; no KL, no
reference model; clip 0.2; sequence-mean aggregation) of clip-by-global-norm(1) + Adam(0.9,
0.95) over all rows, in micro-batches of --micro rows whose gradients are accumulated.

Phases (seconds of the last of --iterations iterations; the first compiles), each ended by a
device sync:
  sample        rlthink: `rlthink.sample` from the train state's params (cast to bf16 once a
                call; continuous batching with --max_slots); tunix: the weight sync of its
                colocated rollout (`VanillaRollout.update_params`, as `RLCluster.sync_weights`)
                and `VanillaRollout.generate` (its `Sampler`) on the prompts repeated --group
                times, from the trained model itself (tunix's colocated default).
  verify        the verifier over every row (host).
  old_logprobs  rlthink with --old_logprobs forward: the scoring forward the GRPO driver runs
                with old_logprobs "forward" or an update of several steps
                (`scoring.score_in_chunks`); skipped (0) when on-policy (default): the
                sampler's log-probs stand in (ratio 1 up to bf16 rounding); tunix with
                num_iterations=1 skips it too (its loss takes the stop-gradient of the
                training forward).
  prepare       advantages and the training arrays (host) and their transfer.
  update        rlthink: `rlthink.algorithms.grpo.grpo_loss` in `rlthink.train.make_train_step`
                (one jitted step, a scan over micro-batches); tunix: `algo_core.grpo_loss_fn` in
                `tunix.rl.trainer.Trainer` (one jitted step per micro-batch, optax.MultiSteps),
                what GRPOLearner runs.
  reference     rlthink with --kl_coef > 0: the reference policy's log-probs for the KL term
                (`scoring.score_in_chunks`, as `grpo.prepare_batch`): the frozen copy of the
                weights in the compute dtype, or with LoRA the base itself (adapters off).
With --lora_rank R rlthink trains LoRA adapters (`rlthink.models.lora`, rank R on
--lora_targets, alpha 2R) on a frozen base held in the compute dtype (no float32 master copy of
the base exists), as a GRPO stage with `OptimizerConfig.lora` does: the sampler merges the
adapters into the weights once a call, the update's gradient and Adam state cover the adapters
only. tunix is then skipped (rlthink's LoRA path alone is measured). The record adds
rollout_s (sample + verify), score_s (old_logprobs + reference) and train_s (prepare + update).
With --sample_chunks K > 1 rlthink samples the rows in K calls dispatched ahead
(`sampling.sample_async`) and verifies chunk k while the device samples chunk k + 1; `verify_s`
is then the verification time left exposed.

One JSON line per model (rlthink_* and tunix_* phase times, totals, ratios tunix / rlthink per
phase) on stdout and appended to --out. tunix is optional: without it (or with --systems rlthink)
the record says why in `tunix_skipped`. Runs without gin, TFDS, grain and tensorboardX.

    python -m rlthink.bench.grpo --model qwen2.5-0.5b qwen2.5-1.5b --out grpo.jsonl
    python -m rlthink.bench.grpo --quick           # tiny qwen2 shape on CPU
    python -m rlthink.bench.grpo --model llama3.1-8b --systems rlthink --lora_rank 16 \
        --kl_coef 0.04 --out grpo_lora.jsonl         # LoRA GRPO on the 8B shape, one GPU
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from rlthink import policy as policy_lib
from rlthink.algorithms import grpo, rl_math, scoring
from rlthink.bench import common, grpo_tunix, iteration, profile
from rlthink.models import decoder, lora
from rlthink.models.presets import get_preset
from rlthink.sampling import sample_async
from rlthink.sampling.rollouts import concat_rollouts
from rlthink.train import OptimizerConfig, create_state, make_optimizer, make_train_step

DEFAULT_MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
PHASES = ("sample", "verify", "old_logprobs", "reference", "prepare", "update")
# The iteration in three parts: rollout, score (scoring forwards), train.
PARTS = {"rollout": ("sample", "verify"), "score": ("old_logprobs", "reference"),
         "train": ("prepare", "update")}


def parse_args(argv):
  p = argparse.ArgumentParser(prog="rlthink bench grpo", description=__doc__.split("\n")[0])
  p.add_argument("--model", action="extend", nargs="+",
                 help=f"qwen2 / qwen3 presets (default {' '.join(DEFAULT_MODELS)})")
  p.add_argument("--prompts", type=int, help="prompts per iteration (default 32; 4 --quick)")
  p.add_argument("--group", type=int, help="completions per prompt (default 8; 2 --quick)")
  p.add_argument("--prompt_len", type=int, help="prompt tokens (default 128; 8 --quick)")
  p.add_argument("--new_tokens", type=int, help="new tokens, forced (default 256; 8 --quick)")
  p.add_argument("--micro", type=int, help="rows per micro-batch (default 16; 4 --quick)")
  p.add_argument("--iterations", type=int, default=2, help="iterations; the last is reported")
  p.add_argument("--old_logprobs", choices=("skip", "forward"), default="skip",
                 help="rlthink: skip the old-log-prob forward (on-policy) or run it")
  p.add_argument("--max_slots", type=int, help="rlthink: continuous batching with this many rows")
  p.add_argument("--sample_chunks", type=int, default=1,
                 help="rlthink: sampler calls per iteration, verified while the next samples")
  p.add_argument("--systems", nargs="+", choices=("rlthink", "tunix"),
                 default=["rlthink", "tunix"])
  p.add_argument("--kl_coef", type=float, default=0.0,
                 help="rlthink: KL to the reference policy (> 0 adds its scoring forward)")
  p.add_argument("--lora_rank", type=int, default=0,
                 help="rlthink: train LoRA adapters of this rank on a frozen base (0: all weights)")
  p.add_argument("--lora_targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"],
                 choices=sorted(lora.TARGETS), help="the projections LoRA adapts")
  p.add_argument("--lr", type=float, default=1e-6)
  p.add_argument("--dtype", default="bfloat16", help="compute dtype (masters stay float32)")
  p.add_argument("--profile_dir", help="rlthink: trace the last iteration's update step and write "
                 "its kernel-time summary (grpo_<model>_update.ops.txt) and trace there")
  p.add_argument("--quick", action="store_true", help="tiny qwen2 shape and sizes, CPU")
  p.add_argument("--out", help="append the JSON lines to this file")
  args = p.parse_args(argv)
  defaults = (dict(prompts=4, group=2, prompt_len=8, new_tokens=8, micro=4) if args.quick else
              dict(prompts=32, group=8, prompt_len=128, new_tokens=256, micro=16))
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  args.model = args.model or (["qwen2.5-0.5b"] if args.quick else list(DEFAULT_MODELS))
  rows = args.prompts * args.group
  if args.group < 2 or rows % args.micro or args.prompts % args.sample_chunks:
    p.error(f"--group must be >= 2, --micro {args.micro} must divide the rows ({rows}) and "
            f"--sample_chunks {args.sample_chunks} the prompts ({args.prompts})")
  if args.lora_rank < 0 or args.kl_coef < 0:
    p.error("--lora_rank and --kl_coef must be >= 0")
  return args


def model_config(name: str, args):
  """The preset in the compute dtype with float32 masters; --quick: its architecture at a tiny
  size (2 layers, hidden 64, vocab 1000)."""
  config = get_preset(name, dtype=args.dtype, param_dtype="float32")
  if args.quick:
    config = config.replace(vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2,
                            num_heads=4, num_kv_heads=2, head_dim=16, max_seq_len=64)
  seq = args.prompt_len + args.new_tokens
  return config if config.max_seq_len >= seq else config.replace(max_seq_len=seq)


# ------------------------------------------------------------------------------------------------
# rlthink.


class RlthinkGRPO:
  """rlthink's GRPO iteration: the pieces `rlthink.algorithms.grpo` runs, timed per phase."""

  def __init__(self, config, args):
    self.config, self.args = config, args
    rows = args.prompts * args.group
    self.cfg = grpo.GRPOConfig(prompts_per_iteration=args.prompts, samples_per_prompt=args.group,
                               max_new_tokens=args.new_tokens, clip_eps=0.2,
                               kl_coef=args.kl_coef,
                               aggregation="sequence_mean", score_batch_size=args.micro,
                               old_logprobs="forward" if args.old_logprobs == "forward"
                               else "rollout")
    optimizer_cfg = OptimizerConfig(learning_rate=args.lr, clip_norm=1.0, b1=0.9, b2=0.95,
                                    eps=1e-8, grad_accum_steps=rows // args.micro)
    optimizer = make_optimizer(optimizer_cfg, total_steps=1000)
    self.trainable = self._trainable(config, args)
    self.state = create_state(self.trainable.params, optimizer, seed=0, copy=False)
    self.step = make_train_step(self.trainable.loss(grpo.grpo_loss(config, self.cfg)), optimizer,
                                self.state, optimizer_cfg.grad_accum_steps,
                                frozen=self.trainable.base)
    self.reference = None
    if args.kl_coef > 0:  # LoRA: the base itself; else a frozen compute-dtype copy
      self.reference = (self.trainable.base if self.trainable.base is not None
                        else scoring.frozen_reference(self.state.params, config))

  @staticmethod
  def _trainable(config, args) -> lora.Trainable:
    """All weights in float32 masters, or (--lora_rank) float32 adapters on a base initialized
    directly in the compute dtype, as `lora.trainable` casts it with base_dtype = the dtype."""
    if not args.lora_rank:
      return lora.Trainable(decoder.init_params(config, jax.random.key(0)))
    cfg = lora.LoRAConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank,
                          targets=tuple(args.lora_targets), base_dtype=args.dtype)
    base = decoder.init_params(config.replace(param_dtype=args.dtype), jax.random.key(0))
    return lora.Trainable(lora.init_adapters(config, cfg), base, cfg)

  def _profiled_update(self, batch, name: str):
    """The update step under `jax.profiler.trace`, its kernel summary written beside the trace."""
    trace_dir = os.path.join(self.args.profile_dir, name)
    hlo = self.step.lower(self.state, batch).compile().as_text()
    with jax.profiler.trace(trace_dir):
      state, metrics = self.step(self.state, batch)
      metrics = jax.device_get(metrics)
    with open(os.path.join(self.args.profile_dir, name + ".ops.txt"), "w") as f:
      f.write(profile.profile_summary(trace_dir, steps=1, hlo_text=hlo))
    return state, metrics

  def iteration(self, prompts: np.ndarray, verify, seed: int, profile_as: str | None = None
                ) -> dict:
    args, config = self.args, self.config
    clock = iteration.PhaseClock()
    current = policy_lib.Policy(config, self.trainable.policy_params(self.state.params), None)
    chunks = np.array_split(np.arange(len(prompts)), args.sample_chunks)
    launch = lambda k: sample_async(
        current, prompts[chunks[k]], max_new_tokens=args.new_tokens, temperature=1.0,
        num_samples=args.group, seed=seed * 1000 + k, stop_tokens=(), max_slots=args.max_slots)
    pending, parts, rewards = launch(0), [], []
    for k in range(len(chunks)):
      ahead = launch(k + 1) if k + 1 < len(chunks) else None  # the device keeps sampling...
      ro = pending.result()
      clock.lap("sample")
      if ro.lengths.min() != args.new_tokens:
        raise RuntimeError("rlthink: a completion stopped early; the benchmark forces every token")
      rewards.append(verify([ro.completion(r) for r in range(ro.num_rows)], args.group))
      clock.lap("verify")                                      # ...while the host verifies
      parts.append(ro)
      pending = ahead
    ro, rewards = concat_rollouts(parts), np.concatenate(rewards)
    batch = ro.train_arrays()
    score = lambda params: scoring.score_in_chunks(
        config, params, batch["tokens"], batch["attention_mask"], chunk_size=args.micro
    )["logprobs"]
    if args.old_logprobs == "forward":
      batch["old_logprobs"] = score(current.params)
      clock.lap("old_logprobs")
    else:  # on-policy: the sampler's log-probs (already in the batch) stand in
      clock.times["old_logprobs_s"] = 0.0
    if self.reference is not None:
      batch["ref_logprobs"] = score(self.reference)
      clock.lap("reference")
    else:
      clock.times["reference_s"] = 0.0
    batch["advantages"] = np.asarray(rl_math.group_advantages(jnp.asarray(rewards), args.group,
                                                              "std"))
    batch = jax.device_put(batch)
    jax.block_until_ready(batch)
    clock.lap("prepare")
    if profile_as is None:
      self.state, metrics = self.step(self.state, batch)
      metrics = jax.device_get(metrics)
    else:
      self.state, metrics = self._profiled_update(batch, profile_as)
    clock.lap("update")
    return dict(clock.times, total_s=clock.total, loss=float(metrics["loss"]),
                grad_norm=float(metrics["grad_norm"]), reward_mean=float(rewards.mean()),
                mean_logprob=float(ro.logprobs.mean()))


# ------------------------------------------------------------------------------------------------


def run_system(name: str, make, prompts, verify, args, model: str = "") -> dict:
  """`iterations` iterations of one system; its last iteration's numbers, prefixed by its name
  (or `<name>_error`)."""
  try:
    system = make()
    results = [system.iteration(prompts, verify, seed=i) for i in range(args.iterations)]
    if name == "rlthink" and args.profile_dir:  # one more iteration, its update traced
      os.makedirs(args.profile_dir, exist_ok=True)
      system.iteration(prompts, verify, seed=args.iterations,
                       profile_as=f"grpo_{model}_update")
  except Exception as e:  # e.g. out of memory: keep the other system's numbers
    traceback.print_exc()
    return {f"{name}_error": f"{type(e).__name__}: {e}"[-2000:]}
  finally:
    system = None
    gc.collect()
  last = dict(results[-1])
  for part, phases in PARTS.items():
    last[f"{part}_s"] = sum(last.get(f"{phase}_s", 0.0) for phase in phases)
  out = {f"{name}_{k}": v for k, v in last.items()}
  out[f"{name}_first_total_s"] = results[0]["total_s"]
  peak = common.peak_memory_bytes()
  out[f"{name}_peak_memory_gb"] = None if peak is None else peak / 1e9
  return out


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  if args.quick:
    jax.config.update("jax_platforms", "cpu")
  info = common.device_info()
  verify = iteration.make_verifier(args.prompts)
  records = []
  for name in args.model:
    config = model_config(name, args)
    prompts = iteration.random_prompts(config.vocab_size, args.prompts, args.prompt_len)
    rows = args.prompts * args.group
    rec = {"bench": "grpo", "model": f"tiny-{config.architecture}" if args.quick else name,
           "prompts": args.prompts, "group": args.group, "rows": rows,
           "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "micro": args.micro,
           "iterations": args.iterations, "old_logprobs": args.old_logprobs,
           "max_slots": args.max_slots, "sample_chunks": args.sample_chunks,
           "dtype": args.dtype, "num_params": config.num_params, "kl_coef": args.kl_coef,
           "lora_rank": args.lora_rank, **info}
    if args.lora_rank:
      rec["lora_targets"] = list(args.lora_targets)
      rec["trained_params"] = lora.num_adapter_params(config, lora.LoRAConfig(
          rank=args.lora_rank, targets=tuple(args.lora_targets)))
    if "rlthink" in args.systems:
      rec.update(run_system("rlthink", lambda: RlthinkGRPO(config, args), prompts, verify, args,
                            rec["model"]))
    if "tunix" not in args.systems:
      rec["tunix_skipped"] = "--systems without tunix"
    elif args.lora_rank or args.kl_coef:
      rec["tunix_skipped"] = "--lora_rank / --kl_coef: rlthink's path only"
    elif (why := grpo_tunix.unavailable()) is not None:
      rec["tunix_skipped"] = why
    else:
      rec.update(run_system("tunix", lambda: grpo_tunix.TunixGRPO(config, args), prompts,
                            verify, args))
      rec["tunix_version"] = grpo_tunix.version()
    for phase in PHASES + ("total",):
      r, t = rec.get(f"rlthink_{phase}_s"), rec.get(f"tunix_{phase}_s")
      rec[f"speedup_{phase}"] = t / r if r and t else None  # None where either skipped it
    common.emit(rec, args.out)
    records.append(rec)
  _print_table(records)
  return 1 if any(k.endswith("_error") for r in records for k in r) else 0


def _print_table(records) -> None:
  def fmt(x):
    return "-" if x is None else f"{x:.3f}"
  print(f"{'model':<14}{'system':>8}" + "".join(f"{p:>13}" for p in PHASES + ("total",)),
        file=sys.stderr)
  for r in records:
    for system in ("rlthink", "tunix"):
      print(f"{r['model']:<14}{system:>8}" + "".join(
          f"{fmt(r.get(f'{system}_{p}_s')):>13}" for p in PHASES + ("total",)), file=sys.stderr)
    print(f"{'':<14}{'tunix/rl':>8}" + "".join(
        f"{fmt(r.get(f'speedup_{p}')):>13}" for p in PHASES + ("total",)), file=sys.stderr)


if __name__ == "__main__":
  raise SystemExit(main())
