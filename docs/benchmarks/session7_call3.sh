#!/usr/bin/env bash
# Session 7, third call (one nvidia-h200): batch 1 in place, no torch, interleaved: the
# committed tiling (attention chunks merged by XLA) against whole-row attention programs of
# 128-slot blocks, 8 warps, 3 stages (call 2's best at batch 1), and two gate/up kernel
# tilings; qwen2.5-1.5b at batch 1 both ways. Files back: results.jsonl, all.log, commit.txt,
# *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
for v in default w128w8s3_b64 default w128w8s3_b64 gu4 gu8k256; do
  job "$v" 50 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 1 --no_torch --iters 5
done
job prof 60 python3 docs/benchmarks/matvec_variants.py w128w8s3_b64 --out "$R" \
      --model qwen2.5-0.5b --batch 1 --no_torch --iters 3 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
for v in default w128w8s3_b64; do
  job "15b_$v" 60 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-1.5b --batch 1 --no_torch --iters 5
done
cat "$L"
