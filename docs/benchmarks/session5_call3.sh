#!/usr/bin/env bash
# Session 5, third call (one nvidia-h200): the compiled kernels against XLA attention, then
# sampler v8 final (call 2's tree plus the chunk partials stored for the real heads only: the merge
# reads them as they are) on qwen2.5-0.5b (profile at batch 1) and qwen2.5-1.5b at
# batch 1, 64 and 256 against the transformers static-cache baseline in the same run.
# Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job check 70 python3 docs/benchmarks/check_decode_kernel.py
grep '^{' /tmp/check.log >> "$R"
job sample_05b 230 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
job sample_15b 280 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b \
    --batch 1 64 256
cat "$L"
