#!/usr/bin/env bash
# Session 5, first call (one nvidia-h200): the compiled kernel against XLA attention
# (check_decode_kernel.py), sampler v8 (one-pass draw; the attention kernel writes the KV cache)
# on the qwen2.5-0.5b shape at batch 1, 64 and 256 against the transformers static-cache
# baseline in the same run, with profiles; then batch 1 and 64 with whole-row attention programs
# (WHOLE_ROW_PROGRAMS = 1) instead of chunks. Files back: results.jsonl, whole_rows.jsonl,
# all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
job check 100 python3 docs/benchmarks/check_decode_kernel.py
grep '^{' /tmp/check.log >> "$R"
job sample_05b 330 python3 -m rlthink.bench.sample --out "$R" --model qwen2.5-0.5b \
    --batch 1 64 256 --profile_dir /tmp/prof
cp /tmp/prof/*b1_*.ops.txt /tmp/prof/*b256_*.ops.txt "$OUT"/ 2>/dev/null
job whole_rows 110 python3 -c "
import sys
from rlthink.models import decode_attention as da
from rlthink.bench import sample
da.WHOLE_ROW_PROGRAMS = 1
sys.exit(sample.main(['--out', '$OUT/whole_rows.jsonl', '--model', 'qwen2.5-0.5b',
                      '--batch', '1', '64', '--no_torch', '--iters', '3']))"
cat "$L"
