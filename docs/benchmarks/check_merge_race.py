"""GPU check of the decode-attention kernel's in-kernel chunk merge (`MERGE_IN_KERNEL`): the
last program of each row merges partials the others stored, ordered by a barrier and an atomic
counter, which Pallas' interpreter (the tests) cannot exercise. Runs the compiled kernel many
times on random caches with chunked programs (1-8 rows, ragged slot ranges, with and without the
cache write) and compares each output with the same kernel's partials merged by XLA
(MERGE_IN_KERNEL = False): a missed or stale partial shows as a large difference. Prints one
JSON line; exits 1 on any difference above 1e-4 (float32). Usage:
`PYTHONPATH=. python3 docs/benchmarks/check_merge_race.py [iterations]`.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rlthink.models import decode_attention as da


_PROGRAMS = {}


def _call(merge: bool, *args, write_kv: bool):
  """The kernel, jitted once per (merge, write_kv) (traced per shape with the flag set)."""
  key = (merge, write_kv)
  if key not in _PROGRAMS:
    kwargs = dict(heads=14, write_kv=True) if write_kv else {}
    _PROGRAMS[key] = jax.jit(lambda *a: da.decode_attention(*a, **kwargs))
  da.MERGE_IN_KERNEL = merge
  try:
    return _PROGRAMS[key](*args)
  finally:
    da.MERGE_IN_KERNEL = True


def main() -> int:
  iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 200
  rng = np.random.default_rng(0)
  worst, cases = 0.0, 0
  for it in range(iterations):
    b = [1, 2, 4, 8][it % 4]
    h, kv, s, d = 14, 2, 384, 64
    start = rng.integers(0, 150, size=b).astype(np.int32)
    length = np.array([rng.integers(lo + 1, s + 1) for lo in start], np.int32)
    write_kv = it % 2 == 1
    q = rng.normal(size=(b, h + 2 * kv if write_kv else h, d)).astype(np.float32)
    k, v = (rng.normal(size=(b, kv, s, d)).astype(np.float32) for _ in range(2))
    args = [jnp.asarray(x) for x in (q, k, v, start, length)]
    got = _call(True, *args, write_kv=write_kv)
    want = _call(False, *args, write_kv=write_kv)
    got, want = (x[0] if write_kv else x for x in (got, want))
    worst = max(worst, float(jnp.max(jnp.abs(got - want))))
    cases += 1
  line = {"check": "merge_race", "cases": cases, "max_abs_diff": worst,
          "device": jax.devices()[0].device_kind}
  print(json.dumps(line))
  return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
  sys.exit(main())
