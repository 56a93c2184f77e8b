#!/usr/bin/env bash
# Session 6, fifth call (one nvidia-h200; the last 215 s of device time): call 4's benchmark
# jobs ran past their time limits. The committed tree on qwen2.5-0.5b at batch 1 against the
# transformers static-cache baseline, then the same layer step as XLA ops (matvec_variants.py
# xla, no torch) in the same call. Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job b1 100 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b --batch 1 --iters 5
job b1_xla 45 python3 docs/benchmarks/matvec_variants.py xla --out "$R" \
    --model qwen2.5-0.5b --batch 1 --no_torch --iters 5
cat "$L"
