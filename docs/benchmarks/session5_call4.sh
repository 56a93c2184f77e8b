#!/usr/bin/env bash
# Session 5, fourth call (one nvidia-h200): sampler v8 as committed (call 2's tree with the
# chunk merge back to call 1's two-kernel form) on qwen2.5-0.5b at batch 1, 64 and 256 against
# the transformers static-cache baseline in the same run. Files back: results.jsonl, all.log,
# commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job sample_05b 240 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256
cat "$L"
