#!/usr/bin/env bash
# Session 4, seventh call (one nvidia-h200): the decode-attention kernel's tilings, now with one
# whole-row program per (row, KV head) at >= 512 programs (no merge), against the chunked ones
# (docs/benchmarks/decode_kernels.py, attention cases only), then sampler v7 on the qwen2.5-0.5b
# shape at batch 1, 64 and 256 against the transformers static-cache baseline in the same run.
# Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
job kernels 100 python3 docs/benchmarks/decode_kernels.py --cases attention --out "$R"
job sample_05b 260 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256
cat "$L"
