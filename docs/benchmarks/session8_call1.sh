#!/usr/bin/env bash
# Session 8, first call (one nvidia-h200): the idle host round trip of each decode step's
# "every row finished?" check (session 7's batch-1 trace: the GPU busy 0.71 of 0.75 ms/step):
# checking every 8 / 32 steps (engine.STEPS_PER_CHECK), the while loop inside a CUDA graph
# (XLA_FLAGS), both; qwen2.5-0.5b at batch 1, 64 and 256, no torch; a batch-1 profile of check8.
# Files back: results.jsonl, all.log, commit.txt, *.ops.txt. (Tree 0d766bd: the "checkN"
# variants and engine.STEPS_PER_CHECK were removed after this call measured no gain.)
set -u
source docs/benchmarks/device_lib.sh
for v in default check8 cbwhile check32 check8+cbwhile default; do
  job "$v" 70 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 1 64 256 --no_torch --iters 5
done
job prof 60 python3 docs/benchmarks/matvec_variants.py check8 --out "$R" \
      --model qwen2.5-0.5b --batch 1 --no_torch --iters 3 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
