"""Benchmarks: `rlthink bench NAME` (or `python3 -m rlthink.bench.NAME`), one JSON line per case.

`train`, `sample`, `ppo` and `check_decode` (and the modules they use) import no gin,
tensorflow_datasets, grain or tensorboardX, so they run on a bare accelerator image (jax, flax,
optax, torch, transformers); `ei` imports the trainer and a task, so it needs the full install.
Numbers, commands and what limits them: docs/benchmarks.md.

- `train`: one jitted AdamW training step of `rlthink.train`, tokens/s and MFU;
  `train_torch` is its transformers/PyTorch baseline, run in a child process.
- `sample`: `rlthink.sample` tokens/s against transformers `generate` and the hardware floor;
  `sample_torch` is its baseline, `sample_breakdown` splits a decode step, `decode_settings` sets
  the decode kernels' knobs for a run.
- `rollout`: useful tokens/s of RL-shaped rollouts, continuous against static batching;
  `rollout_torch` is its baseline.
- `ei`, `ppo`: one Expert Iteration round / PPO iteration, timed phase by phase.
- `check_decode`: the compiled decode kernels against XLA on the device.
- `common` (JSON lines, timing, the PyTorch-subprocess protocol, device information), `hardware`
  (measured matmul rate and memory bandwidth, datasheet peaks), `profile` (kernel time of a
  profiler trace).
"""
