"""Benchmarks: `rlthink bench train|sample`, each timed against a PyTorch baseline.

Everything under `rlthink.bench` runs on the bare accelerator image (jax, flax, optax, torch,
transformers), so nothing here imports gin, tensorflow_datasets, grain or tensorboardX.

- `common`: JSON-line output, timing, the PyTorch-subprocess protocol, device information.
- `hardware`: measured matmul rate and memory bandwidth, and the datasheet peak table.
- `train`: one jitted AdamW training step, tokens/s and MFU (`python -m rlthink.bench.train`);
  `train_torch` is its transformers/PyTorch baseline, run in a child process.
"""
