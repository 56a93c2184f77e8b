#!/usr/bin/env bash
# Session 4, sixth call (one nvidia-h200): sampler v6 on the qwen2.5-1.5b shape at batch 1, 64
# and 256 against the transformers static-cache baseline in the same run. Files back:
# results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job sample_15b 500 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b \
    --batch 1 64 256
cat "$L"
