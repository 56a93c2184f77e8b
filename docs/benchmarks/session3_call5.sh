#!/usr/bin/env bash
# Session 3, fifth nvidia-h200-x2 call: sampler v5 (Pallas decode attention + layer weights stored
# input axis minor), one model per GPU, with the transformers static-cache baseline in the same
# run. Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
S="python3 -m rlthink.bench.sample --out $R --batch 1 64 256"
( CUDA_VISIBLE_DEVICES=0 job sample_05b 270 $S --model qwen2.5-0.5b ) &
( CUDA_VISIBLE_DEVICES=1 job sample_15b 270 $S --model qwen2.5-1.5b ) &
wait
cat "$L"
