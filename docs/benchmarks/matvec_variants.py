"""`rlthink bench sample` with the decoder layer's few-row matmuls set one way
(`decode_matvec.LAYER_KERNELS`): usage `python3 matvec_variants.py VARIANT BENCH_ARGS...`.

Variants: "norms" (the committed LAYER_KERNELS: the matmuls that fuse a norm, q/k/v and
gate/up), "all" (the o-projection and down as kernels too), "xla" (none: the same layer step
as XLA ops), "wide" (twice the outputs per program and 8 warps). Each line gets
"matvec_variant".
"""

import json
import sys

from rlthink.bench import sample
from rlthink.models import decode_matvec

VARIANTS = {
    "norms": dict(decode_matvec.LAYER_KERNELS),
    "all": dict(decode_matvec.LAYER_KERNELS, o=(8, 128, 8), down=(4, 256, 8)),
    "xla": {},
    "wide": {k: (2 * n, bk, 8) for k, (n, bk, _) in decode_matvec.LAYER_KERNELS.items()},
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
