#!/usr/bin/env bash
# Session 7, first call (one nvidia-h200): the o-projection kernel that merges the attention's
# chunks (decode_matvec.attention_matvec, LAYER_KERNELS["o"]) and the matvec kernels loading
# their weights before the input. The compiled kernels against XLA (check_decode_kernel.py);
# qwen2.5-0.5b at batch 1, no torch: the committed tree (profiled), its variants
# (matvec_variants.py: norms = v9's layer with the new load order, o16, xla) and the session's
# start tree (v9, git worktree at HEAD) in the same call.
# Files back: results.jsonl, old.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job check 80 python3 docs/benchmarks/check_decode_kernel.py
grep '^{' /tmp/check.log >> "$R"
job b1_default 90 python3 docs/benchmarks/matvec_variants.py default --out "$R" \
    --model qwen2.5-0.5b --batch 1 --no_torch --iters 5 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt "$OUT"/ 2>/dev/null
for v in norms o16 xla; do
  job "b1_$v" 50 python3 docs/benchmarks/matvec_variants.py $v --out "$R" \
      --model qwen2.5-0.5b --batch 1 --no_torch --iters 5
done
git worktree add -f /tmp/old HEAD > /dev/null 2>&1
job b1_v9 50 env -C /tmp/old PYTHONPATH=/tmp/old python3 -m rlthink.bench.sample \
    --out "$OUT/old.jsonl" --model qwen2.5-0.5b --batch 1 --no_torch --iters 5
cat "$L"
