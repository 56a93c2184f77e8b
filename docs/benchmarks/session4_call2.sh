#!/usr/bin/env bash
# (Recorded as run at commit dae28fe; see the note in session4_call1.sh.)
# Session 4, second call (one nvidia-h200): the decode-matmul kernel with per-lane accumulation
# (one lane reduction at the end) swept over tilings against XLA, then the 0.5b sampler at batch
# 1, XLA vs Pallas matmuls (attention merge now fused with its slice). Files back: results.jsonl,
# all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job kernels 240 python3 docs/benchmarks/decode_kernels.py --cases fused_matmul --out "$R"
job sample_b1 150 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b --batch 1 \
    --matmul xla pallas --no_torch --iters 3
cat "$L"
