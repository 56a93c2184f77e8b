#!/usr/bin/env bash
# Session 7, eighth call (one nvidia-h200): call 7's batch-64 profile shows the chunked attention
# kernel at 8.1 us per layer: whole-row programs at batch 64 too (matvec_variants.py), no torch,
# qwen2.5-0.5b and qwen2.5-1.5b. Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
for v in default w128w8s3_b64 w64_b64; do
  job "05b_$v" 45 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 64 --no_torch --iters 5
done
for v in default w128w8s3_b64; do
  job "15b_$v" 45 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-1.5b --batch 64 --no_torch --iters 5
done
cat "$L"
