"""Building a task's dataset is quiet: no TFDS banners, custom-config or half-written-variant
warnings per build, while real warnings still reach the log."""

import logging

from absl import logging as absl_logging

from rlthink import tasks
from rlthink.tasks import builder


def test_building_prints_no_tfds_banners_or_custom_config_warnings(tmp_path, capfd, caplog):
  caplog.set_level(logging.INFO)
  for seed in (0, 1):  # two option sets: two custom configs, two builds
    builder.build(tasks.get("arithmetic", size="tiny", seed=seed, data_dir=str(tmp_path)))
  out, err = capfd.readouterr()
  logged = "\n".join(r.getMessage() for r in caplog.records)
  for noise in ("Using custom data configuration", "Downloading and preparing dataset",
                "downloaded and prepared", "Variant folder"):
    assert noise not in out + err + logged, noise
  absl_logging.warning("a real problem")  # other absl warnings are not filtered
  assert "a real problem" in [r.getMessage() for r in caplog.records]
