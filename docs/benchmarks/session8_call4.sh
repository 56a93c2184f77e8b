#!/usr/bin/env bash
# Session 8, fourth call (one nvidia-h200): the final tree (down as a decode_matvec kernel for
# weights of >= 8M elements: qwen2.5-1.5b's) against the transformers static-cache baseline in
# the same run, qwen2.5-0.5b and qwen2.5-1.5b at batch 1, 64 and 256; first the compiled
# kernels against XLA with every down projection a kernel (check_decode_kernel.py with
# KERNEL_MIN_SIZE emptied: its small model's down weight is below 8M). Files back:
# results.jsonl, all.log, commit.txt, checks.jsonl.
set -u
source docs/benchmarks/device_lib.sh
job check 80 python3 -c "import runpy, sys; from rlthink.models import decode_matvec as dm
dm.KERNEL_MIN_SIZE = {}; sys.argv = ['check']
runpy.run_path('docs/benchmarks/check_decode_kernel.py', run_name='__main__')"
grep -h '^{' /tmp/check.log > "$OUT/checks.jsonl"
job sample_05b 250 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256
job sample_15b 320 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-1.5b \
    --batch 1 64 256
cat "$L"
