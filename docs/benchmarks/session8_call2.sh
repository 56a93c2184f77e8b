#!/usr/bin/env bash
# Session 8, second call (one nvidia-h200): qwen2.5-1.5b at batch 1 in place, no torch: the
# gate/up kernel's tiling (session 7: 19.1 us per layer, ~2.9 TB/s) and down as a kernel (XLA's
# row reduction 11.1 us); qwen2.5-0.5b at batch 64 / 256 with cuBLASLt for XLA's GEMMs.
# Files back: results.jsonl, all.log, commit.txt.
set -u
source docs/benchmarks/device_lib.sh
for v in default gu4 gu16 gu8w8 dn4k256w8 dn16 default; do
  job "15b_$v" 60 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-1.5b --batch 1 --no_torch --iters 5
done
for v in default xla:--xla_gpu_enable_cublaslt=true; do
  job "05b_$v" 60 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 64 256 --no_torch --iters 5
done
cat "$L"
