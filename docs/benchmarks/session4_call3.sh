#!/usr/bin/env bash
# Session 4, third call (one nvidia-h200): the 0.5b sampler with the fused decode layout and RoPE
# of q inside the attention kernel, batch 1 and 256 with profiles; then batch 256 under two XLA
# GEMM settings (cuBLAS for every matmul; exhaustive Triton tiling search). Files back:
# results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
S="python3 -m rlthink.bench.sample --out $R --model qwen2.5-0.5b --no_torch --iters 3"
job default 170 $S --batch 1 256 --profile_dir /tmp/prof
job cublas 90 env XLA_FLAGS=--xla_gpu_enable_triton_gemm=false $S --batch 256
job exhaustive 150 env XLA_FLAGS=--xla_gpu_exhaustive_tiling_search=true $S --batch 256
cp /tmp/prof/*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
