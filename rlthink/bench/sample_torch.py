"""The PyTorch baseline of `rlthink.bench.sample`, run in its own process by `run_torch_subprocess`.

transformers `generate` on a randomly initialized model of the same shape
(`AutoModelForCausalLM.from_config`, bf16 weights, SDPA attention) with a static KV cache
(`cache_implementation="static"`), sampling at temperature 1 with no top-k / top-p, and exactly
`new_tokens` new tokens (min_new_tokens = max_new_tokens) after random `prompt_len`-token prompts.
Tokens/s counts new tokens per second of the whole `generate` call (prefill included), the median
of `iters` timed calls after `warmup` untimed ones (which absorb any compilation).

Args (JSON, see `common.child_args`): config (ModelConfig fields), batches, prompt_len,
new_tokens, warmup, iters, allow_cpu.
"""

from __future__ import annotations

import statistics
import time

from rlthink.bench import common
from rlthink.bench.train_torch import hf_config


def run(args: dict) -> dict:
  """Times generate for each batch size; returns {"results": [{"batch", "tokens_per_s", ...}]}."""
  import torch  # optional dependency (the baseline's child process only)
  import transformers  # optional dependency, as torch

  cuda = torch.cuda.is_available()
  if not cuda and not args.get("allow_cpu", False):
    return {"skipped": "no CUDA GPU for the PyTorch baseline"}
  device = torch.device("cuda" if cuda else "cpu")
  torch.manual_seed(0)
  config = hf_config(args["config"])
  config.use_cache = True
  model = transformers.AutoModelForCausalLM.from_config(
      config, attn_implementation="sdpa", dtype=torch.bfloat16).to(device).eval()
  vocab, p, c = args["config"]["vocab_size"], args["prompt_len"], args["new_tokens"]
  results = []
  for batch in args["batches"]:
    prompts = torch.randint(0, vocab, (batch, p), device=device)
    mask = torch.ones_like(prompts)

    def generate():
      with torch.no_grad():
        out = model.generate(input_ids=prompts, attention_mask=mask, do_sample=True,
                             temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=c,
                             min_new_tokens=c, cache_implementation="static", pad_token_id=0)
      if cuda:
        torch.cuda.synchronize()
      return out

    for _ in range(max(args.get("warmup", 1), 1)):
      out = generate()
    if out.shape != (batch, p + c):
      raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected {(batch, p + c)}")
    times = []
    for _ in range(args["iters"]):
      start = time.perf_counter()
      generate()
      times.append(time.perf_counter() - start)
    med = statistics.median(times)
    results.append({"batch": batch, "tokens_per_s": batch * c / med, "median_s": med,
                    "spread": (max(times) - min(times)) / med})
  return {"results": results, "device": torch.cuda.get_device_name() if cuda else "cpu",
          "torch_version": torch.__version__, "transformers_version": transformers.__version__}


def main(argv=None) -> int:
  common.child_result(run(common.child_args(argv)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
