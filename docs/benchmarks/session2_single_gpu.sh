#!/usr/bin/env bash
# Single-GPU runs of session 2, side by side on the two GPUs of an nvidia-h200-x2 machine (one
# process per GPU): GPU 0 the sampler benchmark (v3) with a profile, GPU 1 the PPO memory fit
# and the one-GPU train-step reference for the scaling numbers. Writes under $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
nvidia-smi --query-gpu=index,name,memory.total --format=csv > "$OUT/gpus.txt" 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  # Profiler traces are thousands of files: keep them outside $OUT, copy only the summaries (the
  # session's first run wrote them under $OUT and lost the summaries to the device tool's limits).
  timeout 240 python3 -m rlthink.bench.sample --model qwen2.5-0.5b --batch 1 64 256 \
    --profile_dir /tmp/prof --out "$OUT/sample_v3.jsonl" > "$OUT/sample_05b.log" 2>&1
  echo "sample 0.5b rc=$?" >> "$OUT/status.txt"
  cp /tmp/prof/*.ops.txt "$OUT/" 2>/dev/null
  timeout 300 python3 -m rlthink.bench.sample --model qwen2.5-1.5b --batch 1 64 256 \
    --out "$OUT/sample_v3.jsonl" > "$OUT/sample_15b.log" 2>&1
  echo "sample 1.5b rc=$?" >> "$OUT/status.txt"
) &
(
  export CUDA_VISIBLE_DEVICES=1
  for spec in "qwen2.5-1.5b separate" "qwen2.5-3b separate" "qwen2.5-3b shared"; do
    set -- $spec
    timeout 170 python3 -m rlthink.bench.ppo --model "$1" --value_model "$2" --iterations 1 \
      --out "$OUT/ppo_fit_1gpu.jsonl" > "$OUT/ppo_$1_$2.log" 2>&1
    echo "ppo $1 $2 rc=$?" >> "$OUT/status.txt"
  done
  timeout 80 python3 -m rlthink.bench.train --model qwen2.5-1.5b --steps 20 --no_torch \
    --out "$OUT/train_1gpu.jsonl" > "$OUT/train_1gpu.log" 2>&1
  echo "train 1.5b 1gpu rc=$?" >> "$OUT/status.txt"
) &
wait
for f in "$OUT"/*.log; do echo "== $f"; grep -v "^{" "$f" | tail -n 6; done
cat "$OUT/status.txt"
