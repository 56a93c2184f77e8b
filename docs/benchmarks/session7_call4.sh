#!/usr/bin/env bash
# Session 7, fourth call (one nvidia-h200): the committed tree (v9's program: calls 1-3's
# variants did not beat it) on qwen2.5-0.5b at batch 1, 64 and 256 against the transformers
# static-cache baseline in the same run. Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job sample_05b 400 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256
cat "$L"
