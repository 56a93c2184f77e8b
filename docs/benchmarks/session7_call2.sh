#!/usr/bin/env bash
# Session 7, second call (one nvidia-h200): decode-attention tilings in place
# (matvec_variants.py; call 1's merging o kernel and weights-first matvec loads were slower and
# are reverted). qwen2.5-0.5b at batch 1 and 256, no torch: the committed tiling (chunks merged
# by XLA at batch 1, 64-slot blocks at 256) and whole rows at batch 1 / other blocks, warps and
# pipeline stages at 256. Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
for v in default w64_b128 w128_b64w8s3 w128w8s3_b128w8s3 w64w8s3_b32; do
  job "$v" 75 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 1 256 --no_torch --iters 5
done
cat "$L"
