"""The benchmarks import where gin, TFDS, grain and tensorboardX are not installed (the accelerator
image), so `python3 -m rlthink.bench.<name>` runs there with the repository alone."""

import os
import subprocess
import sys

# Makes the modules the accelerator image lacks unimportable, then imports the benchmarks.
_CHILD = """
import sys
for name in ("gin", "tensorflow_datasets", "grain", "tensorboardX"):
  sys.modules[name] = None  # import raises ImportError
import rlthink.algorithms.ppo
import rlthink.bench.check_decode
import rlthink.bench.hardware
import rlthink.bench.ppo
import rlthink.bench.sample
import rlthink.bench.sample_torch
import rlthink.bench.train
import rlthink.bench.train_torch
print("imported")
"""


def test_benchmark_modules_import_without_gin():
  proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "imported"
