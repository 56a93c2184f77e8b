#!/usr/bin/env bash
# Session 8, third call (one nvidia-h200): the decode-attention kernel merging its chunks itself
# (MERGE_IN_KERNEL): the compiled merge against XLA's many times (check_merge_race.py), the
# sampler's kernels against XLA attention (check_decode_kernel.py); then batch 1 in place, no
# torch: XLA's merge ("nomerge") against the in-kernel merge loading 8 / 1 / 24 chunks at once,
# qwen2.5-0.5b and qwen2.5-1.5b. Files back: results.jsonl, all.log, commit.txt, checks.jsonl.
# (Tree a796fd1: check_merge_race.py and the "nomerge" / "muN" variants were removed with the
# in-kernel merge after this call measured it slower.)
set -u
source docs/benchmarks/device_lib.sh
job race 120 python3 docs/benchmarks/check_merge_race.py 400
job check 100 python3 docs/benchmarks/check_decode_kernel.py
grep -h '^{' /tmp/race.log /tmp/check.log > "$OUT/checks.jsonl"
for v in nomerge default mu1 mu24 nomerge default; do
  job "05b_$v" 50 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 1 --no_torch --iters 5
done
for v in nomerge default; do
  job "15b_$v" 60 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-1.5b --batch 1 --no_torch --iters 5
done
cat "$L"
