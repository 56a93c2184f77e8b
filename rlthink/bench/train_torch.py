"""The PyTorch baseline of `rlthink.bench.train`, run in its own process by `run_torch_subprocess`.

The same training step as the JAX side: a transformers `AutoModelForCausalLM.from_config` of the
same shape (Qwen2 / Qwen3 / Llama / Mistral), next-token cross-entropy (`labels=tokens`, which
transformers computes in float32), backward, AdamW, on random tokens.

The baseline is the stronger of the two standard set-ups (mode "bf16", the default): bf16 weights,
gradients and AdamW state with `torch.optim.AdamW(fused=True)` and SDPA attention (flash/cuDNN
kernels on the GPU). It moves half the bytes of fp32-master training and skips the casts, so it is
faster than mode "autocast" (fp32 weights + AdamW, bf16 autocast), which matches the JAX step's
numerics and is available for comparison. RoPE scaling is left out of the HF config: it changes
only the rotary frequencies, not the cost.

Args (JSON, see `common.child_args`): config (ModelConfig fields), batch, seq, steps, warmup, lr,
mode, remat, allow_cpu, compile.
"""

from __future__ import annotations

import statistics
import time

from rlthink.bench import common


def hf_config(config: dict):
  """A transformers config of the same shape as the ModelConfig fields `config`."""
  import transformers  # optional dependency (the baseline's child process only)

  common_kw = dict(
      vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
      intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_layers"],
      num_attention_heads=config["num_heads"], num_key_value_heads=config["num_kv_heads"],
      max_position_embeddings=config["max_seq_len"], rope_theta=config["rope_theta"],
      rms_norm_eps=config["rms_norm_eps"], tie_word_embeddings=config["tie_embeddings"], use_cache=False)
  arch = config["architecture"]
  if arch == "qwen2":
    if config["head_dim"] != config["hidden_size"] // config["num_heads"]:
      raise ValueError("Qwen2 in transformers derives head_dim from hidden_size / num_heads")
    return transformers.Qwen2Config(**common_kw, use_sliding_window=False)
  if arch == "qwen3":
    return transformers.Qwen3Config(**common_kw, head_dim=config["head_dim"],
                                    attention_bias=config["qkv_bias"])
  if arch == "mistral":
    return transformers.MistralConfig(**common_kw, head_dim=config["head_dim"],
                                      sliding_window=config["sliding_window"])
  if arch == "llama":
    return transformers.LlamaConfig(**common_kw, head_dim=config["head_dim"],
                                    attention_bias=config["qkv_bias"], mlp_bias=False)
  raise ValueError(f"no transformers baseline for architecture {arch!r}")


def run(args: dict) -> dict:
  """Builds the model, times `steps` training steps after `warmup`, returns the measurements."""
  import torch  # optional dependency (the baseline's child process only)
  import transformers  # optional dependency, as torch

  cuda = torch.cuda.is_available()
  if not cuda and not args.get("allow_cpu", False):
    return {"skipped": "no CUDA GPU for the PyTorch baseline"}
  device = torch.device("cuda" if cuda else "cpu")
  mode = args.get("mode", "bf16")
  if mode not in ("bf16", "autocast"):
    raise ValueError(f"mode must be 'bf16' or 'autocast', got {mode!r}")
  torch.manual_seed(0)
  weight_dtype = torch.bfloat16 if mode == "bf16" else torch.float32
  model = transformers.AutoModelForCausalLM.from_config(
      hf_config(args["config"]), attn_implementation="sdpa", dtype=weight_dtype).to(device)
  model.train()
  if args.get("remat"):
    model.gradient_checkpointing_enable()
  num_params = sum(p.numel() for p in model.parameters())
  optimizer = torch.optim.AdamW(model.parameters(), lr=args.get("lr", 3e-4), betas=(0.9, 0.95),
                                weight_decay=0.1, fused=cuda)
  step_model = torch.compile(model) if args.get("compile") else model
  batch, seq = args["batch"], args["seq"]
  tokens = torch.randint(0, args["config"]["vocab_size"], (batch, seq), device=device)

  def step():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "autocast"):
      loss = step_model(input_ids=tokens, labels=tokens, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  def sync():
    if cuda:
      torch.cuda.synchronize()

  losses = [step().item() for _ in range(max(args.get("warmup", 2), 1))]
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(args["steps"]):
    sync()
    start = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - start)
  losses.append(loss.item())
  step_s = statistics.median(times)
  return {
      "tokens_per_s": batch * seq / step_s, "step_ms": 1e3 * step_s,
      "step_spread": (max(times) - min(times)) / step_s, "num_params": num_params,
      "loss_first": losses[0], "loss_last": losses[-1], "mode": mode,
      "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
      "device": torch.cuda.get_device_name() if cuda else "cpu",
      "torch_version": torch.__version__, "transformers_version": transformers.__version__,
  }


def main(argv=None) -> int:
  common.child_result(run(common.child_args(argv)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
