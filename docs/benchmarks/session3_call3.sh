#!/usr/bin/env bash
# Session 3, third nvidia-h200-x2 call: sampler v4 (Pallas decode attention) against v3's XLA
# attention in the same run, one model per GPU, with the transformers baseline; then profiles of
# the Pallas version (0.5b, batch 1 and 256); then the 2-GPU sampler cases of issue 7 (1.5b FSDP
# and tensor parallel, 7B FSDP). Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
S="python3 -m rlthink.bench.sample --out $R"
(
  export CUDA_VISIBLE_DEVICES=0
  job sample_05b 300 $S --model qwen2.5-0.5b --batch 1 64 256 --attention xla pallas
  job profile_05b 120 $S --model qwen2.5-0.5b --batch 1 256 --attention pallas --no_torch \
    --iters 2 --profile_dir /tmp/prof
  cp /tmp/prof/*.ops.txt "$OUT/" 2>/dev/null
) &
( CUDA_VISIBLE_DEVICES=1 job sample_15b 380 $S --model qwen2.5-1.5b --batch 1 256 \
    --attention xla pallas ) &
wait
job x2_15b_fsdp 50 $S --model qwen2.5-1.5b --batch 256 --mesh 1,2,1 --no_torch --iters 3
job x2_15b_tensor 50 $S --model qwen2.5-1.5b --batch 256 --mesh 1,1,2 --no_torch --iters 3
job x2_7b_fsdp 80 $S --model qwen2.5-7b --batch 64 --mesh 1,2,1 --no_torch --iters 2
cat "$L"
