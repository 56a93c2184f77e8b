#!/usr/bin/env bash
# Session 4, first nvidia-h200-x2 call: GPU 0 sweeps the fused decode-matmul kernel's tilings
# against XLA (docs/benchmarks/decode_kernels.py --cases fused_matmul); GPU 1 times the 0.5b
# sampler with the fused decode layout, XLA vs Pallas matmuls at batch 1 and XLA at batch 256,
# with profiles (kernel order of one stretch of a step). Files back: results.jsonl, all.log,
# commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
( CUDA_VISIBLE_DEVICES=0 job kernels 330 python3 docs/benchmarks/decode_kernels.py \
    --cases fused_matmul --out "$R" ) &
( CUDA_VISIBLE_DEVICES=1 job sample_b1 200 python3 -m rlthink.bench.sample --out "$R" \
    --model qwen2.5-0.5b --batch 1 --matmul xla pallas --no_torch --iters 3 \
    --profile_dir /tmp/prof
  CUDA_VISIBLE_DEVICES=1 job sample_b256 150 python3 -m rlthink.bench.sample --out "$R" \
    --model qwen2.5-0.5b --batch 256 --no_torch --iters 3 --profile_dir /tmp/prof ) &
wait
cp /tmp/prof/*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
