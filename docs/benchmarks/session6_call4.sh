#!/usr/bin/env bash
# Session 6, fourth call (one nvidia-h200): sampler v9 = the q/k/v and gate/up matmuls of a
# few-row decode step as decode_matvec kernels (each with the residual add and the RMSNorm
# before it fused in; o and down on XLA, their residual adds done by the next kernel). The
# compiled kernels against XLA (check_decode_kernel.py); batch 1 and 4 with the layer step as
# XLA ops (matvec_variants.py xla) and batch 4 as committed, no torch; then the committed tree
# on qwen2.5-0.5b at batch 1 (profiled), 64, 256 and qwen2.5-1.5b at batch 1 against the
# transformers static-cache baseline in the same run.
# Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job check 80 python3 docs/benchmarks/check_decode_kernel.py
grep '^{' /tmp/check.log >> "$R"
job b1_xla 45 python3 docs/benchmarks/matvec_variants.py xla --out "$R" \
    --model qwen2.5-0.5b --batch 1 --no_torch --iters 5
for v in xla norms; do
  job "b4_$v" 40 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 4 --no_torch --iters 5
done
job sample_05b_b1 100 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
job sample_05b 170 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 64 256
job sample_15b 100 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b --batch 1
cat "$L"
