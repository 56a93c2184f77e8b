"""`rlthink bench sample --decode_setting NAME=VALUE`: the decode kernels' tuning knobs for one run.

The sampler reads these module settings when it traces (`rlthink.sampling.engine.kernel_settings`
is part of its compile-cache key, so a changed setting compiles anew):

    matvec.ROLE=N,K,WARPS      decode_matvec.LAYER_KERNELS[ROLE] (ROLE: qkv, o, gate_up, down): that
                               one-row matmul as a kernel of N outputs per program, K-wide input
                               steps, WARPS warps
    matvec.ROLE=xla            the same matmul as XLA ops (removed from LAYER_KERNELS)
    matvec_min_size.ROLE=SIZE  decode_matvec.KERNEL_MIN_SIZE[ROLE]: a kernel only from SIZE weight
                               elements on (0: always)
    matvec_max_rows=N          decode_matvec.MAX_ROWS: rows per device up to which the kernels run
    attention_whole_row_programs=N   decode_attention.WHOLE_ROW_PROGRAMS
    attention_tiling.PROGRAMS=BLOCK,WARPS,STAGES   decode_attention.WHOLE_ROW_TILINGS[PROGRAMS]

`applied(settings)` sets them for the duration of a `with` block and restores them after.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from rlthink.models import decode_attention, decode_matvec

ROLES = ("qkv", "o", "gate_up", "down")


def _ints(name: str, value: str, count: int) -> tuple[int, ...]:
  try:
    numbers = tuple(int(v) for v in value.split(","))
  except ValueError:
    numbers = ()
  if len(numbers) != count or min(numbers) < 0:
    raise ValueError(f"--decode_setting {name}={value}: expected {count} comma-separated "
                     "non-negative integers")
  return numbers


def _apply(setting: str) -> None:
  name, sep, value = setting.partition("=")
  kind, _, key = name.partition(".")
  if not sep:
    raise ValueError(f"--decode_setting {setting!r}: expected NAME=VALUE")
  if kind in ("matvec", "matvec_min_size") and key not in ROLES:
    raise ValueError(f"--decode_setting {setting}: role {key!r} is not one of {ROLES}")
  if kind == "matvec" and value == "xla":
    decode_matvec.LAYER_KERNELS.pop(key, None)
  elif kind == "matvec":
    decode_matvec.LAYER_KERNELS[key] = _ints(name, value, 3)
  elif kind == "matvec_min_size":
    decode_matvec.KERNEL_MIN_SIZE[key] = _ints(name, value, 1)[0]
  elif name == "matvec_max_rows":
    decode_matvec.MAX_ROWS = _ints(name, value, 1)[0]
  elif name == "attention_whole_row_programs":
    decode_attention.WHOLE_ROW_PROGRAMS = _ints(name, value, 1)[0]
  elif kind == "attention_tiling" and key:
    decode_attention.WHOLE_ROW_TILINGS[_ints(name, key, 1)[0]] = _ints(name, value, 3)
  else:
    raise ValueError(f"--decode_setting {setting}: unknown setting {name!r} (see "
                     "rlthink.bench.decode_settings)")


@contextlib.contextmanager
def applied(settings: Sequence[str]) -> Iterator[None]:
  """Applies each "NAME=VALUE" in order (ValueError naming a bad one, before anything runs) and
  restores every setting on exit."""
  saved = (dict(decode_matvec.LAYER_KERNELS), dict(decode_matvec.KERNEL_MIN_SIZE),
           decode_matvec.MAX_ROWS, decode_attention.WHOLE_ROW_PROGRAMS,
           dict(decode_attention.WHOLE_ROW_TILINGS))

  def restore():
    for target, value in ((decode_matvec.LAYER_KERNELS, saved[0]),
                          (decode_matvec.KERNEL_MIN_SIZE, saved[1]),
                          (decode_attention.WHOLE_ROW_TILINGS, saved[4])):
      target.clear()
      target.update(value)
    decode_matvec.MAX_ROWS, decode_attention.WHOLE_ROW_PROGRAMS = saved[2], saved[3]

  try:
    for setting in settings:
      _apply(setting)
    yield
  finally:
    restore()
