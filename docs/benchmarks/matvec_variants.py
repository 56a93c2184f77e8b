"""`rlthink bench sample` with the decoder layer's few-row matmuls set one way
(`decode_matvec.LAYER_KERNELS`): usage `python3 matvec_variants.py VARIANT BENCH_ARGS...`.

Variants: "default" (the committed LAYER_KERNELS), "norms" (only the matmuls that fuse a
norm, q/k/v and gate/up: the attention's chunks merged by XLA, the o-projection an XLA matvec),
"all" (down as a kernel too), "xla" (none: the same layer step as XLA ops), "wide" (twice the
outputs per program and 8 warps), "o16" / "o4" (16 / 4 outputs per program of the merging
o kernel), "o8w" (8 warps for it). Each line gets "matvec_variant". (Session 6 ran "norms",
"all" and "xla" when LAYER_KERNELS had no "o"; its "all" then meant o=(8, 128, 8) as the plain
matvec after XLA's merge.)
"""

import json
import sys

from rlthink.bench import sample
from rlthink.models import decode_matvec

_DEFAULT = dict(decode_matvec.LAYER_KERNELS)
VARIANTS = {
    "default": _DEFAULT,
    "norms": {k: _DEFAULT[k] for k in ("qkv", "gate_up")},
    "all": dict(_DEFAULT, down=(4, 256, 8)),
    "xla": {},
    "wide": {k: (2 * n, bk, 8) for k, (n, bk, _) in _DEFAULT.items()},
    "o16": dict(_DEFAULT, o=(16, 64, 4)),
    "o4": dict(_DEFAULT, o=(4, 64, 4)),
    "o8w": dict(_DEFAULT, o=(8, 64, 8)),
}

if __name__ == "__main__":
  variant, args = sys.argv[1], sys.argv[2:]
  decode_matvec.LAYER_KERNELS = VARIANTS[variant]
  out = args[args.index("--out") + 1]
  tmp = out + ".tmp"
  args[args.index("--out") + 1] = tmp
  rc = sample.main(args)
  with open(tmp) as f, open(out, "a") as g:
    for line in f:
      g.write(json.dumps(dict(json.loads(line), matvec_variant=variant)) + "\n")
  sys.exit(rc)
