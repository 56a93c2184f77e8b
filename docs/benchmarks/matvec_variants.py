"""`rlthink bench sample` with the decode step's kernels set one way: usage
`python3 matvec_variants.py VARIANT BENCH_ARGS...`. A variant overrides module settings of
`rlthink.models.decode_matvec` (LAYER_KERNELS: which few-row matmuls are kernels, and their
tiling) and `rlthink.models.decode_attention` (WHOLE_ROW_PROGRAMS, WHOLE_ROW_TILINGS: the
attention kernel's tiling).

Matmul variants: "norms" / "default" (the committed settings), "all" (the o-projection and down
as kernels too, at every size), "xla" (none: the same layer step as XLA ops), "wide" (twice the
outputs per program and 8 warps), "guN[kK][wW]" (also "dn", "op", "qkv" for down, o, q/k/v):
that matmul as a kernel of N outputs per program, K-wide input steps (default 128) and W warps
(4), the others as committed. Attention variants "wNNN[wW][sS]_bMMM[wW][sS]": whole rows of
NNN-slot blocks at few programs (batch 1), MMM-slot blocks for whole rows at many (batch 256),
with W warps and S pipeline stages (default 4 and 2): whole rows at every program count, NNN
below 512 programs, MMM from 512 on; "chunks_bMMM": whole rows only from 512 programs (the tiling
before session 7's change to 128). "cbwhile": XLA_FLAGS putting the decode while loop in a CUDA
graph (command buffer) too; "xla:FLAGS": FLAGS appended to XLA_FLAGS. "A+B" applies both. Each
line gets "matvec_variant".
"""

import json
import os
import re
import sys

from rlthink.bench import sample
from rlthink.models import decode_attention, decode_matvec

_KERNELS = dict(decode_matvec.LAYER_KERNELS)
VARIANTS = {
    "default": {},
    "norms": {},
    "all": {"LAYER_KERNELS": dict(_KERNELS, o=(8, 128, 8), down=(4, 256, 8)),
            "KERNEL_MIN_SIZE": {}},
    "xla": {"LAYER_KERNELS": {}},
    "wide": {"LAYER_KERNELS": {k: (2 * n, bk, 8) for k, (n, bk, _) in _KERNELS.items()}},
    "cbwhile": {"XLA_FLAGS": "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"},
}


def _tiling(text):
  block, warps, stages = re.fullmatch(r"(\d+)(?:w(\d+))?(?:s(\d+))?", text).groups()
  return int(block), int(warps or 4), int(stages or 2)


def settings(variant: str) -> dict:
  """The module settings of `variant` (matmul entries over the committed LAYER_KERNELS)."""
  found = _settings(variant)
  if "LAYER_KERNELS+" in found:
    found = dict(found)
    found["LAYER_KERNELS"] = dict(found.get("LAYER_KERNELS", _KERNELS), **found.pop(
        "LAYER_KERNELS+"))
  return found


def _settings(variant: str) -> dict:
  if "+" in variant:
    merged = {}
    for part in variant.split("+"):
      for k, v in _settings(part).items():
        merged[k] = dict(merged.get(k, {}), **v) if k == "LAYER_KERNELS+" else v
    return merged
  if variant in VARIANTS:
    return VARIANTS[variant]
  if variant.startswith("xla:"):
    return {"XLA_FLAGS": variant[4:]}
  matmul = re.fullmatch(r"(gu|dn|op|qkv)(\d+)(?:k(\d+))?(?:w(\d+))?", variant)
  if matmul:
    role, n, k, w = matmul.groups()
    role = {"gu": "gate_up", "dn": "down", "op": "o"}.get(role, role)
    return {"LAYER_KERNELS+": {role: (int(n), int(k or 128), int(w or 4))}}
  few, many = variant.split("_")
  if few == "chunks":
    return {"WHOLE_ROW_PROGRAMS": 512, "WHOLE_ROW_TILINGS": {1: _tiling(many[1:])}}
  return {"WHOLE_ROW_PROGRAMS": 1,
          "WHOLE_ROW_TILINGS": {1: _tiling(few[1:]), 512: _tiling(many[1:])}}


if __name__ == "__main__":
  variant, args = sys.argv[1], sys.argv[2:]
  for name, value in settings(variant).items():
    if name == "XLA_FLAGS":  # read when the backend starts, after this
      os.environ[name] = f"{os.environ.get(name, '')} {value}".strip()
      continue
    module, = [m for m in (decode_matvec, decode_attention) if hasattr(m, name)]
    setattr(module, name, value)
  out = args[args.index("--out") + 1]
  tmp = out + ".tmp"
  if os.path.exists(tmp):  # the bench appends: only this run's lines get this variant's tag
    os.remove(tmp)
  args[args.index("--out") + 1] = tmp
  rc = sample.main(args)
  with open(tmp) as f, open(out, "a") as g:
    for line in f:
      g.write(json.dumps(dict(json.loads(line), matvec_variant=variant)) + "\n")
  os.remove(tmp)
  sys.exit(rc)
