#!/usr/bin/env bash
# Session 7, sixth call (one nvidia-h200): do v9's matvec kernels help qwen2.5-1.5b at batch 1?
# The committed tree against the same layer step as XLA ops (matvec_variants.py xla),
# interleaved, no torch. Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
for v in default xla default xla; do
  job "15b_$v" 60 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-1.5b --batch 1 --no_torch --iters 5
done
cat "$L"
