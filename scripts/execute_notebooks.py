"""Executes notebooks top to bottom and saves them with their outputs, as they are committed.

    .venv/bin/python scripts/execute_notebooks.py notebooks/01_quickstart.ipynb notebooks/02_algorithms.ipynb

Each runs in a fresh temporary directory (its relative WORKDIR lands there and is deleted after),
on the CPU with the test suite's 8 forced host devices, so the saved outputs are those of a clean
run as the notebook tests make it. A failing cell stops with its error and
leaves the notebook file unchanged.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import nbclient
import nbformat


def execute(path: str, timeout: int = 3600) -> None:
  nb = nbformat.read(path, as_version=4)
  with tempfile.TemporaryDirectory(prefix="rlthink_notebook_") as cwd:
    client = nbclient.NotebookClient(nb, timeout=timeout, startup_timeout=120,
                                     kernel_name="python3", resources={"metadata": {"path": cwd}})
    client.execute()
  nbformat.validate(nb)
  nbformat.write(nb, path)


def main(paths: list[str]) -> int:
  if not paths:
    print(__doc__, file=sys.stderr)
    return 2
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  for path in paths:
    start = time.monotonic()
    execute(path)
    print(f"{path}: executed and saved in {time.monotonic() - start:.0f}s", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main(sys.argv[1:]))
