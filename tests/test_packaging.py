"""A wheel (a non-editable install) ships the gin configs, and the installed package finds its
default experiment by name from any working directory."""

import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_ships_every_config_and_finds_them_from_any_cwd(tmp_path):
  source = tmp_path / "src"  # a copy: the build writes build/ and egg-info into its source
  shutil.copytree(os.path.join(REPO, "rlthink"), source / "rlthink",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), source / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                  "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")], check=True,
                 cwd=tmp_path, timeout=120)
  (wheel,) = (tmp_path / "dist").iterdir()
  with zipfile.ZipFile(wheel) as z:
    shipped = {n for n in z.namelist() if n.endswith(".gin")}
    z.extractall(tmp_path / "site")
  configs = os.path.join(REPO, "configs")
  expected = {os.path.relpath(os.path.join(root, n), REPO).replace("configs", "rlthink/configs", 1)
              for root, _, names in os.walk(configs, followlinks=True) for n in names
              if n.endswith(".gin")}
  assert "rlthink/configs/experiments/quickstart.gin" in shipped
  assert shipped == expected
  # The unpacked wheel (not this checkout) parses the embedded default from an empty cwd.
  code = ("from rlthink import cli, gin_utils; assert 'site' in gin_utils.__file__; "
          "gin_utils.parse([cli.DEFAULT_EXPERIMENT], []); print('ok')")
  env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), JAX_PLATFORMS="cpu")
  (tmp_path / "elsewhere").mkdir()
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "elsewhere", env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_top_level_configs_is_the_packaged_folder():
  assert os.path.samefile(os.path.join(REPO, "configs"), os.path.join(REPO, "rlthink", "configs"))
