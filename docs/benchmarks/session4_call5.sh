#!/usr/bin/env bash
# Session 4, fifth call (one nvidia-h200): sampler v6 on the qwen2.5-0.5b shape at batch 1, 64
# and 256 against the transformers static-cache baseline in the same run, with profiles. Files
# back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job sample_05b 330 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt /tmp/prof/*b256_*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
