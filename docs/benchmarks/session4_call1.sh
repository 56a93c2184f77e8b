#!/usr/bin/env bash
# (Recorded as run at commit 661c35f; the fused_matmul cases and bench sample --matmul were removed
# with the Pallas decode-matmul kernel after call 2, see docs/benchmarks/README.md, v6.)
# Session 4, first call (one nvidia-h200; no 2-GPU machine was lent): the fused decode-matmul
# kernel's tilings against XLA (docs/benchmarks/decode_kernels.py --cases fused_matmul), then the
# 0.5b sampler with the fused decode layout, XLA vs Pallas matmuls at batch 1 and XLA at batch
# 256, with profiles (kernel order of one stretch of a step). Files back: results.jsonl, all.log,
# commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job kernels 230 python3 docs/benchmarks/decode_kernels.py --cases fused_matmul --out "$R"
job sample_b1 170 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b --batch 1 \
    --matmul xla pallas --no_torch --iters 3 --profile_dir /tmp/prof
job sample_b256 140 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 256 --no_torch --iters 3 --profile_dir /tmp/prof
cp /tmp/prof/*.ops.txt "$OUT"/ 2>/dev/null
cat "$L"
