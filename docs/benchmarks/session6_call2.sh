#!/usr/bin/env bash
# Session 6, second call (one nvidia-h200): call 1 found the matvec kernels 3-5x slower than
# XLA's (a fori_loop over K waited a memory round trip per step); with the walk over K unrolled:
# the tilings (tune_decode_matvec.py, qwen2.5-0.5b), then sampler v9 on qwen2.5-0.5b at batch 1
# (profiled) against the transformers static-cache baseline in the same run.
# Files back: results.jsonl, tune.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job tune 100 python3 docs/benchmarks/tune_decode_matvec.py qwen2.5-0.5b
grep '^{' /tmp/tune.log > "$OUT/tune.jsonl"
job sample_05b 280 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
tail -5 /tmp/sample_05b.log
