#!/usr/bin/env bash
# Session 5, second call (one nvidia-h200): the compiled kernels against XLA attention, then
# sampler v8 (call 1's tree plus the draw's Pallas pass, the merge in one kernel, the new slot
# first in the attention loop) on qwen2.5-0.5b (profiles at batch 1 and 256) and qwen2.5-1.5b at
# batch 1, 64 and 256 against the transformers static-cache baseline in the same run.
# Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job check 70 python3 docs/benchmarks/check_decode_kernel.py
grep '^{' /tmp/check.log >> "$R"
job sample_05b 230 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt /tmp/prof/*b256_*.ops.txt "$OUT"/ 2>/dev/null
job sample_15b 280 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b \
    --batch 1 64 256
cat "$L"
