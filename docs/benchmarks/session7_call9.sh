#!/usr/bin/env bash
# Session 7, ninth call (one nvidia-h200): the committed tree with whole-row attention programs
# from 128 programs on (batch 64: call 8's variant w128w8s3_b64, now the default), qwen2.5-0.5b
# and qwen2.5-1.5b at batch 64 against the transformers static-cache baseline in the same run.
# Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job b64_05b 80 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b --batch 64 \
    --iters 3
job b64_15b 80 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b --batch 64 \
    --iters 3
cat "$L"
