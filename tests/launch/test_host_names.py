"""A host name that starts with "-" (or holds spaces or ":") never reaches ssh, scp or gcloud,
where it would be read as an option such as -oProxyCommand=...: every launcher refuses it,
naming the flag, before printing or running anything."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = ["--gin_file", "configs/experiments/quickstart.gin", "--workdir", "/mnt/shared/run",
       "--dry_run"]


def launch(script, *flags):
  clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *flags, *RUN],
                        capture_output=True, text=True, timeout=60, cwd=REPO, env=clean)


@pytest.mark.parametrize("script, flags, flag", [
    ("gpu_hosts.py", ["--hosts=gpu-a,-oProxyCommand=touch /tmp/pwned"], "--hosts"),
    ("gpu_hosts.py", ["--hosts=gpu-a,user@-oProxyCommand=x"], "--hosts"),
    ("gpu_hosts.py", ["--hosts=gpu-a,gpu b"], "--hosts"),
    ("slurm.py", ["--nodes", "2", "--gpus_per_node", "8", "--login_host=-oProxyCommand=x"],
     "--login_host"),
    ("tpu_pod.py", ["--project", "p", "--zone", "z", "--accelerator", "v5e-16",
                    "--tpu_name=--help"], "--tpu_name"),
])
def test_host_names_that_read_as_options_are_refused(script, flags, flag):
  out = launch(script, *flags)
  assert out.returncode == 2, out.stdout + out.stderr
  assert f"{flag} " in out.stderr and "is not a host name" in out.stderr, out.stderr
  assert out.stdout == ""


def test_ordinary_host_names_still_pass():
  out = launch("gpu_hosts.py", "--hosts=gpu-a,me@gpu-b.example.org")
  assert out.returncode == 0, out.stderr
  assert "gpu-a, me@gpu-b.example.org" in out.stdout
