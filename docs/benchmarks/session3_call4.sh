#!/usr/bin/env bash
# Session 3, fourth nvidia-h200-x2 call: the decode-kernel sweep on one GPU (tilings of the Pallas
# decode attention, XLA attention, matmul layouts), then on both GPUs the sampler with the fsdp
# weights gathered before the decode loop (1.5b FSDP, 7B FSDP) and a profile of 7B tensor-parallel
# decoding at batch 1. Files back: results.jsonl, all.log, commit.txt, *.ops.txt.
set -u
source docs/benchmarks/device_lib.sh
CUDA_VISIBLE_DEVICES=0 job kernels 170 python3 docs/benchmarks/decode_kernels.py --out "$R"
S="python3 -m rlthink.bench.sample --out $R --no_torch"
job x2_15b_fsdp 50 $S --model qwen2.5-1.5b --batch 256 --mesh 1,2,1 --iters 3
job x2_7b_fsdp 80 $S --model qwen2.5-7b --batch 64 --mesh 1,2,1 --iters 2
job x2_7b_tensor_profile 90 $S --model qwen2.5-7b --batch 1 --mesh 1,1,2 --iters 2 \
  --profile_dir /tmp/prof
cp /tmp/prof/*.ops.txt "$OUT/" 2>/dev/null
cat "$L"
