"""The launch scripts: their dry runs print the exact commands for a v5e-16 TPU pod, 2 GPU hosts and
a 2-node SLURM job (naming the experiment, the workdir and the process count), as a valid shell
script; missing or bad flags fail with a message naming them; and what runs is what was printed."""

import os
import shlex
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(REPO, "launch")
GIN = "configs/experiments/quickstart.gin"
WORKDIR = "/mnt/shared/runs/quickstart-7"
PARAM = "SFTConfig.steps = 100"
sys.path.insert(0, LAUNCH)
import tpu_pod  # noqa: E402  (the launch scripts are standalone files, not a package)


def launch(script, *flags, env=None, dry_run=True):
  clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
  argv = [sys.executable, os.path.join(LAUNCH, script), *flags] + (["--dry_run"] if dry_run
                                                                   else [])
  return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO,
                        env=dict(clean, **(env or {})))


def commands(stdout):
  """The shell lines of a dry run (comments dropped), each split like the shell would."""
  lines = [line for line in stdout.splitlines() if line and not line.startswith("#")]
  return [shlex.split(line.removesuffix(" &")) for line in lines if line != "wait"]


def check_shell_syntax(stdout):
  assert subprocess.run(["bash", "-n"], input=stdout, text=True).returncode == 0, stdout


def train_argv(remote):
  """The `rlthink train` part of a remote command string and its environment assignments."""
  words = shlex.split(remote)
  start = words.index(".venv/bin/rlthink")
  env = dict(w.split("=", 1) for w in words[:start] if "=" in w and w.split("=")[0].isupper())
  return env, words[start:]


EXPECTED_TRAIN = [".venv/bin/rlthink", "train", "--gin_file", GIN, "--gin_param", PARAM,
                  "--workdir", WORKDIR]
RUN = ["--gin_file", GIN, "--gin_param", PARAM, "--workdir", WORKDIR]


def test_tpu_pod_v5e_16_dry_run():
  out = launch("tpu_pod.py", "--project", "my-project", "--zone", "us-west4-a", "--accelerator",
               "v5e-16", *RUN)
  assert out.returncode == 0, out.stderr
  check_shell_syntax(out.stdout)
  assert "4 host(s) x 4 chips" in out.stdout and "4 process(es)" in out.stdout
  cmds = commands(out.stdout)
  describe_then_create = cmds[0]
  assert describe_then_create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe",
                                      "rlthink-v5litepod-16"]
  create = describe_then_create[describe_then_create.index("||") + 1:]
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "rlthink-v5litepod-16"]
  assert {"--accelerator-type=v5litepod-16", "--zone=us-west4-a", "--project=my-project",
          "--version=v2-alpha-tpuv5-lite"} <= set(create)
  run = cmds[-1]
  assert run[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rlthink-v5litepod-16"]
  assert "--worker=all" in run  # the same command on every worker
  remote = next(w for w in run if w.startswith("--command=")).removeprefix("--command=")
  assert remote.startswith("cd rlthink && ")
  env, argv = train_argv(remote)
  assert env == {"RLTHINK_DISTRIBUTED": "cluster", "RLTHINK_NUM_PROCESSES": "4"}
  assert argv == EXPECTED_TRAIN
  # the code goes to every worker first
  assert any(c[4] == "scp" and "--worker=all" in c for c in cmds)


def test_gpu_hosts_dry_run_for_two_hosts():
  out = launch("gpu_hosts.py", "--hosts", "alice@gpu-a,gpu-b", *RUN)
  assert out.returncode == 0, out.stderr
  check_shell_syntax(out.stdout)
  assert "2 process(es), one per host" in out.stdout
  runs = [c for c in commands(out.stdout) if c[0] == "ssh" and "rlthink train" in c[-1]]
  assert [c[-2] for c in runs] == ["alice@gpu-a", "gpu-b"]
  for index, run in enumerate(runs):
    env, argv = train_argv(run[-1])
    assert env == {"RLTHINK_COORDINATOR": "gpu-a:8476", "RLTHINK_NUM_PROCESSES": "2",
                   "RLTHINK_PROCESS_ID": str(index)}
    assert argv == EXPECTED_TRAIN
  # gcloud transport: the same commands through `gcloud compute ssh`
  out = launch("gpu_hosts.py", "--hosts", "vm-0,vm-1", "--transport", "gcloud", "--project", "p",
               "--zone", "z", "--gpus_per_host", "4", "--no_sync", *RUN)
  assert out.returncode == 0, out.stderr
  runs = commands(out.stdout)
  assert [c[:4] for c in runs] == [["gcloud", "compute", "ssh", "vm-0"],
                                   ["gcloud", "compute", "ssh", "vm-1"]]
  env, _ = train_argv(next(w for w in runs[1] if w.startswith("--command=")).split("=", 1)[1])
  assert env["RLTHINK_PROCESS_ID"] == "1" and env["RLTHINK_LOCAL_DEVICE_IDS"] == "0,1,2,3"


def test_slurm_dry_run_for_two_nodes():
  out = launch("slurm.py", "--nodes", "2", "--gpus_per_node", "8", "--partition", "gpu", *RUN)
  assert out.returncode == 0, out.stderr
  check_shell_syntax(out.stdout)
  assert "2 process(es), one per node" in out.stdout
  script = out.stdout.split("<<'RLTHINK_EOF'\n")[1].split("RLTHINK_EOF")[0]
  assert out.stdout.splitlines()[2] == "sbatch <<'RLTHINK_EOF'"
  for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
               "#SBATCH --partition=gpu", "export RLTHINK_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"):
    assert line in script.splitlines()
  srun = shlex.split(script.strip().splitlines()[-1])
  assert srun[:2] == ["srun", "--kill-on-bad-exit=1"] and srun[2:] == EXPECTED_TRAIN


@pytest.mark.parametrize("script, flags, message", [
    ("tpu_pod.py", ["--zone", "z", "--accelerator", "v5e-16"], "missing --project"),
    ("tpu_pod.py", ["--project", "p", "--accelerator", "v5e-16"], "missing --zone"),
    ("tpu_pod.py", ["--project", "p", "--zone", "z"], "missing --accelerator"),
    ("tpu_pod.py", ["--project", "p", "--zone", "z", "--accelerator", "v9-16"], "'v9-16' is not"),
    ("tpu_pod.py", ["--project", "p", "--zone", "z", "--accelerator", "v4-12"],
     "6 chips do not split"),
    ("gpu_hosts.py", [], "--hosts is required"),
    ("gpu_hosts.py", ["--hosts", "a,b", "--transport", "gcloud", "--project", "p"],
     "needs --zone"),
    ("gpu_hosts.py", ["--hosts", "a,a"], "names a host twice"),
    ("slurm.py", ["--nodes", "2"], "missing --gpus_per_node"),
])
def test_missing_or_bad_flags_fail_naming_them(script, flags, message):
  out = launch(script, *flags, *RUN)
  assert out.returncode == 2 and message in out.stderr, out.stderr
  assert out.stdout == ""  # nothing printed as if it would run


@pytest.mark.parametrize("flags, message", [
    (["--gin_file", GIN, "--workdir", "runs/q"], "must be an absolute path"),
    (["--gin_file", "configs/experiments/nope.gin", "--workdir", WORKDIR], "is not in"),
    (["--workdir", WORKDIR], "--gin_file is required"),
    (["--gin_file", GIN], "--workdir is required"),
])
def test_experiment_flags_are_checked(flags, message):
  out = launch("gpu_hosts.py", "--hosts", "a,b", *flags)
  assert out.returncode == 2 and message in out.stderr, out.stderr


@pytest.mark.parametrize("name, expected", [
    ("v5e-16", ("v5litepod-16", 4, 4)), ("v5litepod-8", ("v5litepod-8", 1, 8)),
    ("v6e-256", ("v6e-256", 64, 4)), ("v4-8", ("v4-8", 1, 4)), ("v4-32", ("v4-32", 4, 4)),
    ("v5p-16", ("v5p-16", 2, 4)), ("v3-32", ("v3-32", 4, 4)),
])
def test_tpu_hosts_per_accelerator(name, expected):
  assert tpu_pod.parse_accelerator(name)[:3] == expected


def _fake_tool(directory, name, body):
  path = os.path.join(directory, name)
  with open(path, "w") as f:
    f.write("#!/bin/bash\n" + body)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def test_what_runs_is_what_the_dry_run_printed(tmp_path):
  # A fake gcloud logs its arguments; `describe` fails, so the TPU is created.
  log = tmp_path / "calls.log"
  _fake_tool(tmp_path, "gcloud", f'printf "%s\\n" "$(printf "%q " "$@")" >> {log}\n'
                                 '[ "$4" = describe ] && exit 1; echo "fake gcloud $4"\n')
  flags = ["--project", "p", "--zone", "z", "--accelerator", "v5e-16", "--no_sync", *RUN]
  env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
  dry = launch("tpu_pod.py", *flags, env=env)
  real = launch("tpu_pod.py", *flags, env=env, dry_run=False)
  assert real.returncode == 0, real.stderr
  calls = [shlex.split(line) for line in log.read_text().splitlines()]
  printed = commands(dry.stdout)
  describe, create = printed[0][:printed[0].index(">/dev/null")], printed[0][
      printed[0].index("||") + 1:]
  assert calls == [describe[1:], create[1:], printed[1][1:]]
  assert "fake gcloud ssh" in real.stdout
  # An existing TPU (describe succeeds) is reused.
  log.unlink()
  _fake_tool(tmp_path, "gcloud", f'printf "%s\\n" "$(printf "%q " "$@")" >> {log}\n')
  assert launch("tpu_pod.py", *flags, env=env, dry_run=False).returncode == 0
  assert [shlex.split(line) for line in log.read_text().splitlines()] == [describe[1:],
                                                                          printed[1][1:]]


def test_one_failing_host_stops_the_others(tmp_path):
  _fake_tool(tmp_path, "ssh", 'for a; do host=$a; [ "${a:0:3}" = gpu ] && break; done\n'
                              '[ "$host" = gpu-b ] && { echo boom; exit 3; }\nexec sleep 60\n')
  out = launch("gpu_hosts.py", "--hosts", "gpu-a,gpu-b", "--no_sync", *RUN,
               env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}, dry_run=False)
  assert out.returncode == 3
  assert "[gpu-b] boom" in out.stdout and "exit status 3" in out.stderr
