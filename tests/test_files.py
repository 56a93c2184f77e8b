"""Atomic writes: a reader sees the old file or the new one, never a prefix; normal permissions."""

import os
import stat

import pytest

from rlthink import files


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "config.gin"
  files.atomic_write_text(path, "SFTConfig.steps = 150\n")
  assert path.read_text() == "SFTConfig.steps = 150\n"
  umask = os.umask(0o022)
  os.umask(umask)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask

  def killed(src, dst):  # the process dies between writing the temporary file and the rename
    raise KeyboardInterrupt
  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    files.atomic_write_text(path, "SFTConfig.steps = 300\n")
  assert path.read_text() == "SFTConfig.steps = 150\n"
  assert os.listdir(tmp_path) == ["config.gin"]
  monkeypatch.undo()
  files.atomic_write_json(tmp_path / "r" / "results.json", {"a": 1})
  assert (tmp_path / "r" / "results.json").read_text() == '{\n  "a": 1\n}\n'
