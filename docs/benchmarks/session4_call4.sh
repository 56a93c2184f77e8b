#!/usr/bin/env bash
# Session 4, fourth call (one nvidia-h200): the 0.5b sampler (fused decode layout; attention
# kernel reading q from the fused projection and rotating it) at batch 1, 64 and 256, XLA's
# default GEMMs against cuBLAS for every matmul (XLA_FLAGS), profiles of the default at batch 1
# and 256. Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
S="python3 -m rlthink.bench.sample --out $R --model qwen2.5-0.5b --no_torch --iters 3"
job default 200 $S --batch 1 64 256 --profile_dir /tmp/prof
job cublas 120 env XLA_FLAGS=--xla_gpu_enable_triton_gemm=false $S --batch 1 64 256
cp /tmp/prof/*b1_*.ops.txt /tmp/prof/*b256_*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
