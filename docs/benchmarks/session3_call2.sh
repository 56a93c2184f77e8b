#!/usr/bin/env bash
# Session 3, second nvidia-h200-x2 call. Phase 1, one process per GPU: GPU 0 the decode-kernel
# micro-benchmark, GPU 1 PPO qwen2.5-3b with a separate value model and --remat on one H200.
# Phase 2, both GPUs: train-step scaling variants of qwen2.5-1.5b, then the 7B PPO iteration with
# a separate value model (FSDP, --remat). At most 8 files come back: results.jsonl, all.log.
set -u
source docs/benchmarks/device_lib.sh
( CUDA_VISIBLE_DEVICES=0 job kernels 150 python3 docs/benchmarks/decode_kernels.py --out "$R" ) &
( CUDA_VISIBLE_DEVICES=1 job ppo_3b_separate_remat 200 python3 -m rlthink.bench.ppo \
    --model qwen2.5-3b --value_model separate --remat --iterations 1 --out "$R" ) &
wait
T="python3 -m rlthink.bench.train --model qwen2.5-1.5b --steps 15 --no_torch --out $R"
job train_data_b32 90 $T --mesh 2,1,1 --batch 32
job train_fsdp_b32 90 $T --mesh 1,2,1 --batch 32
XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_pipelined_all_reduce=true" \
  job train_data_b16_lhs 90 $T --mesh 2,1,1 --batch 16
job ppo_7b_separate 220 python3 -m rlthink.bench.ppo --model qwen2.5-7b --value_model separate \
  --remat --mesh 1,2,1 --iterations 1 --out "$R"
cat "$L"
