"""`rlthink bench sample --decode_setting`: the decode kernels' knobs set for a run, then restored."""

import pytest

from rlthink.bench import decode_settings
from rlthink.models import decode_attention, decode_matvec
from rlthink.sampling import engine


def test_settings_apply_inside_the_block_and_are_restored_after():
  before = engine.kernel_settings()
  kernels = dict(decode_matvec.LAYER_KERNELS)
  with decode_settings.applied(["matvec.gate_up=xla", "matvec.o=16,256,8",
                                "matvec_min_size.down=0", "matvec_max_rows=4",
                                "attention_whole_row_programs=64",
                                "attention_tiling.512=32,4,3"]):
    assert "gate_up" not in decode_matvec.LAYER_KERNELS
    assert decode_matvec.LAYER_KERNELS["o"] == (16, 256, 8)
    assert decode_matvec.LAYER_KERNELS["qkv"] == kernels["qkv"]
    assert decode_matvec.KERNEL_MIN_SIZE["down"] == 0 and decode_matvec.MAX_ROWS == 4
    assert decode_attention.WHOLE_ROW_PROGRAMS == 64
    assert decode_attention.WHOLE_ROW_TILINGS[512] == (32, 4, 3)
    assert engine.kernel_settings() != before  # the sampler compiles anew for them
  assert engine.kernel_settings() == before


@pytest.mark.parametrize("setting, message", [
    ("matvec.up=xla", "role 'up' is not one of"),
    ("matvec.down=4,256", "expected 3 comma-separated"),
    ("matvec_max_rows=-1", "non-negative"),
    ("attention_tiles.512=64,4,2", "unknown setting 'attention_tiles.512'"),
    ("matvec_max_rows", "expected NAME=VALUE"),
])
def test_a_bad_setting_is_named_and_nothing_stays_changed(setting, message):
  before = engine.kernel_settings()
  with pytest.raises(ValueError, match=message):
    with decode_settings.applied(["matvec.qkv=4,128,4", setting]):
      pass
  assert engine.kernel_settings() == before
