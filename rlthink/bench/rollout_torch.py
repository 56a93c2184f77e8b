"""The transformers baseline of `rlthink.bench.rollout`, run in its own process.

transformers `generate` on a randomly initialized model of the same shape (bf16 weights, SDPA
attention, static KV cache), temperature 1 with no top-k / top-p, on the first `requests`
requests of the rollout benchmark's workload (`rlthink.bench.rollout.workload`, the same seed:
the same prompts and lengths), in consecutive batches of `slots` rows (each prompt repeated for
its samples). Each row is forced to its drawn length by a logits processor: its eos id is masked
until the row's last position, where eos is the only choice; `generate` stops a batch when every
row has produced eos (static batching). Useful tokens/s = the rows' lengths summed / the wall
seconds of all batches (after one untimed short call that absorbs set-up).

Args (JSON, see `common.child_args`): config (ModelConfig fields), slots, all_requests (the
workload's size), requests (how many of them run here), samples, prompt_len, max_new_tokens,
mean_frac, sigma, seed, allow_cpu.
"""

from __future__ import annotations

import time

import numpy as np

from rlthink.bench import common
from rlthink.bench.rollout import workload
from rlthink.bench.train_torch import hf_config


def _force_lengths(lengths, prompt_len: int, eos: int):
  """A LogitsProcessor: row i's token at completion position lengths[i] - 1 is eos, never
  before."""
  import torch  # optional dependency (this child process only)
  from transformers import LogitsProcessor  # optional dependency, as torch

  class ForceLengths(LogitsProcessor):
    def __call__(self, input_ids, scores):
      position = input_ids.shape[1] - prompt_len
      last = torch.as_tensor(lengths, device=scores.device) - 1 == position
      scores[:, eos] = float("-inf")
      scores[last] = float("-inf")
      scores[last, eos] = 0.0
      return scores

  return ForceLengths()


def run(args: dict) -> dict:
  import torch  # optional dependency (this child process only)
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
  work = workload(args["config"]["vocab_size"], args["all_requests"], args["samples"],
                  args["prompt_len"], args["max_new_tokens"], args["mean_frac"], args["sigma"],
                  args["seed"])
  eos = args["config"].get("eos_token_id") or 0
  slots, p, n = args["slots"], args["prompt_len"], args["requests"]
  rows = np.repeat(work.prompts, work.samples, axis=0)[:n]
  lengths_all = work.lengths[:n]

  def generate(batch, lengths, max_new_tokens):
    ids = torch.as_tensor(batch, dtype=torch.long, device=device)
    with torch.no_grad():
      out = model.generate(
          input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
          top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, cache_implementation="static",
          eos_token_id=eos, pad_token_id=eos,
          logits_processor=transformers.LogitsProcessorList(
              [_force_lengths(lengths, p, eos)]))
    if cuda:
      torch.cuda.synchronize()
    return out[:, p:].cpu().numpy()

  generate(rows[:slots], np.minimum(lengths_all[:slots], 4), 4)  # set-up, untimed
  start = time.perf_counter()
  for i in range(0, len(rows), slots):
    lengths = lengths_all[i:i + slots]
    out = generate(rows[i:i + slots], lengths, args["max_new_tokens"])
    got = np.sum(np.cumsum(out == eos, axis=1) == 0, axis=1) + 1  # tokens up to the first eos
    if not np.array_equal(got, lengths):
      raise RuntimeError("generate did not stop each row at its forced length")
  wall = time.perf_counter() - start
  useful = int(lengths_all.sum())
  return {"tok_s": useful / wall, "s": wall, "requests": int(len(rows)), "useful_tokens": useful,
          "device": torch.cuda.get_device_name() if cuda else "cpu",
          "version": torch.__version__, "transformers_version": transformers.__version__}


def main(argv=None) -> int:
  common.child_result(run(common.child_args(argv)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
