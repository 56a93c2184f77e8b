#!/usr/bin/env bash
# Session 6, first call (one nvidia-h200): the compiled decode kernels (attention, and the new
# decode_matvec kernels for <= 4 rows) against XLA (check_decode_kernel.py); the matvec tilings
# (tune_decode_matvec.py); sampler v9 on qwen2.5-0.5b at batch 1 and 4 (profiled) and
# qwen2.5-1.5b at batch 1, against the transformers static-cache baseline in the same run.
# Files back: results.jsonl, tune.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job check 120 python3 docs/benchmarks/check_decode_kernel.py
grep '^{' /tmp/check.log >> "$R"
job tune 150 python3 docs/benchmarks/tune_decode_matvec.py qwen2.5-0.5b qwen2.5-1.5b
grep '^{' /tmp/tune.log > "$OUT/tune.jsonl"
job sample_05b 150 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 4 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
job sample_15b 130 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b --batch 1
cat "$L"
