#!/usr/bin/env bash
# Session 3, first nvidia-h200-x2 call. Phase 1, one process per GPU: GPU 0 the decode-kernel
# micro-benchmark and the one-GPU train-step references (batch 8 and 16); GPU 1 PPO qwen2.5-3b
# (shared trunk, --remat) capped at an H100's 80 GB (XLA_PYTHON_CLIENT_MEM_FRACTION=0.567 of the
# H200's 141 GB). Phase 2, both GPUs: the 7B shared-trunk PPO iteration with FSDP and --remat.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=index,name,memory.total --format=csv > "$OUT/gpus.txt" 2>&1
git rev-parse HEAD > "$OUT/commit.txt" 2>&1; git status --short >> "$OUT/commit.txt" 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  timeout 120 python3 docs/benchmarks/decode_kernels.py --out "$OUT/kernels.jsonl" \
    > "$OUT/kernels.log" 2>&1; echo "kernels rc=$?" >> "$OUT/status.txt"
  for b in 8 16; do
    timeout 75 python3 -m rlthink.bench.train --model qwen2.5-1.5b --batch $b --steps 15 \
      --no_torch --out "$OUT/train_1gpu.jsonl" > "$OUT/train_1gpu_b$b.log" 2>&1
    echo "train 1gpu b$b rc=$?" >> "$OUT/status.txt"
  done
) &
(
  export CUDA_VISIBLE_DEVICES=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.567
  timeout 200 python3 -m rlthink.bench.ppo --model qwen2.5-3b --value_model shared --remat \
    --iterations 1 --out "$OUT/ppo_h100cap.jsonl" > "$OUT/ppo_3b_shared_h100cap.log" 2>&1
  echo "ppo 3b shared remat h100cap rc=$?" >> "$OUT/status.txt"
) &
wait
timeout 290 python3 -m rlthink.bench.ppo --model qwen2.5-7b --value_model shared --remat \
  --mesh 1,2,1 --iterations 1 --out "$OUT/ppo_7b.jsonl" > "$OUT/ppo_7b_shared.log" 2>&1
echo "ppo 7b shared remat fsdp2 rc=$?" >> "$OUT/status.txt"
for f in "$OUT"/*.log; do echo "== $f"; grep -v "^{" "$f" | tail -n 8; done
cat "$OUT/status.txt"
