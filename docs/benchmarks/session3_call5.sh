#!/usr/bin/env bash
# Session 3, fifth nvidia-h200-x2 call: sampler v5 (Pallas decode attention + layer weights stored
# input axis minor), one model per GPU, with the transformers static-cache baseline in the same
# run. Files back: results.jsonl, all.log, commit.txt.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 PYTHONPATH=$PWD
R="$OUT/results.jsonl"; L="$OUT/all.log"
job() {  # job NAME TIMEOUT CMD...: runs CMD, its log appended to all.log under a header
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "/tmp/$name.log" 2>&1; local rc=$?
  { echo "== $name rc=$rc"; grep -v "^{\|Delay kernel" "/tmp/$name.log" | tail -n 14; } >> "$L"
}
git rev-parse HEAD > "$OUT/commit.txt"; git status --short >> "$OUT/commit.txt"
S="python3 -m rlthink.bench.sample --out $R --batch 1 64 256"
( CUDA_VISIBLE_DEVICES=0 job sample_05b 270 $S --model qwen2.5-0.5b ) &
( CUDA_VISIBLE_DEVICES=1 job sample_15b 270 $S --model qwen2.5-1.5b ) &
wait
cat "$L"
