#!/usr/bin/env bash
# Session 7, seventh call (one nvidia-h200): profiles for the next session's work, no torch:
# qwen2.5-0.5b at batch 64 (no profile since v6) and qwen2.5-1.5b at batch 1 (v9's kernels).
# Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job b64 100 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b --batch 64 \
    --no_torch --iters 3 --profile_dir /tmp/prof
job b1_15b 100 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b --batch 1 \
    --no_torch --iters 3 --profile_dir /tmp/prof
cp /tmp/prof/*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
