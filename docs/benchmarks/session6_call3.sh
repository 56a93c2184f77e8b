#!/usr/bin/env bash
# Session 6, third call (one nvidia-h200): call 2 measured the four matvec kernels in place
# slower than XLA's matmuls at batch 1 (0.88 vs 0.79 ms/step; its tiling microbenchmark did not
# match the in-place times). The layer's few-row matmuls each way (matvec_variants.py: all
# kernels, only the norm-fused ones, none, wider tiles), qwen2.5-0.5b batch 1 profiled, and
# batch 4 for all/xla; no torch. Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
for v in xla all norms wide; do
  job "b1_$v" 100 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 1 --no_torch --iters 5 --profile_dir /tmp/prof_$v
  cp /tmp/prof_$v/*b1_*.ops.txt "$OUT/$v.ops.txt" 2>/dev/null
done
for v in xla all; do
  job "b4_$v" 60 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 4 --no_torch --iters 5
done
cat "$L"
