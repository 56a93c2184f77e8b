"""What the launch scripts share: the `rlthink train` command, the code sync, and printing or
running a plan of shell commands. Standard library only: the scripts run on a laptop without
rlthink installed.

A plan is a list of steps; a step is a list of `Command`s that run at the same time (one per host).
`--dry_run` prints the plan as a shell script (parallel commands end in `&` and are followed by
`wait`); otherwise each command is printed, then run, and the first failure stops the plan.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ARCHIVE = os.path.join(tempfile.gettempdir(), "rlthink-src.tar.gz")
REMOTE_ARCHIVE = "rlthink-src.tar.gz"  # in the remote home directory
# Installs uv (when missing), a Python 3.11 virtual environment and rlthink with `extra` in the
# remote repo directory; `{dir}` and `{extra}` are filled in.
SETUP = ("export PATH=$HOME/.local/bin:$PATH && cd {dir} && "
         "(command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh) && "
         "uv venv --allow-existing --python 3.11 .venv && "
         'uv pip install --python .venv/bin/python -e ".[{extra}]"')


class LaunchError(ValueError):
  """A missing or malformed argument; the message names the flag."""


@dataclasses.dataclass
class Command:
  """argv to run; stdin: text fed to it; label: output prefix in parallel steps; unless: skip the
  command when this one succeeds (e.g. `describe` before `create`)."""

  argv: list[str]
  stdin: str | None = None
  label: str | None = None
  unless: list[str] | None = None

  def shell(self) -> str:
    text = shlex.join(self.argv)
    if self.unless:
      text = f"{shlex.join(self.unless)} >/dev/null 2>&1 || {text}"
    if self.stdin is not None:
      text += " <<'RLTHINK_EOF'\n" + self.stdin.rstrip("\n") + "\nRLTHINK_EOF"
    return text


def add_run_args(parser: argparse.ArgumentParser, remote_dir_default: str | None = "rlthink"
                 ) -> None:
  """The flags every launcher shares: the experiment, the workdir, the code and the dry run."""
  run = parser.add_argument_group("experiment")
  run.add_argument("--gin_file", action="append", default=[], metavar="FILE",
                   help="gin file of the experiment, relative to the repository (repeatable), "
                        "e.g. configs/experiments/quickstart.gin")
  run.add_argument("--gin_param", action="append", default=[], metavar="BINDING",
                   help="extra gin binding (repeatable), e.g. \"SFTConfig.steps = 100\"")
  run.add_argument("--workdir", help="absolute path on storage every host mounts (NFS, "
                                     "Filestore, gcsfuse): checkpoints, metrics and results")
  run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the training processes (repeatable)")
  code = parser.add_argument_group("code")
  code.add_argument("--remote_dir", default=remote_dir_default,
                    help="repository directory on the hosts (relative: to the home directory)")
  code.add_argument("--no_sync", action="store_true",
                    help="do not copy this checkout to the hosts and install it")
  code.add_argument("--setup", default=None,
                    help="shell command that installs rlthink in --remote_dir after the copy "
                         "(default: uv, Python 3.11 and `pip install -e .[tpu|cuda]`)")
  parser.add_argument("--dry_run", action="store_true",
                      help="print the commands (as a shell script) and run nothing")


def check_run_args(args: argparse.Namespace, num_processes: int) -> None:
  """Raises LaunchError naming the missing or bad flag."""
  if not args.gin_file:
    raise LaunchError("--gin_file is required (e.g. configs/experiments/quickstart.gin)")
  if not args.workdir:
    raise LaunchError("--workdir is required: a directory on storage every host mounts")
  if num_processes > 1 and not os.path.isabs(args.workdir):
    raise LaunchError(f"--workdir {args.workdir!r} must be an absolute path on storage all "
                      f"{num_processes} hosts mount (each host would write its own copy)")
  for item in args.env:
    if "=" not in item or not item.split("=", 1)[0].isidentifier():
      raise LaunchError(f"--env {item!r} must be KEY=VALUE")
  if not args.no_sync:
    for gin_file in args.gin_file:
      if not any(os.path.isfile(os.path.join(base, gin_file))
                 for base in (REPO_ROOT, os.path.join(REPO_ROOT, "configs"))):
        raise LaunchError(f"--gin_file {gin_file!r} is not in {REPO_ROOT} (nor its configs/); "
                          "the hosts get this checkout's files")


def check_host(flag: str, host: str) -> str:
  """`host` ([user@]name) if ssh, scp and gcloud can only read it as a host name: not empty, no
  leading "-" (which they would parse as an option, e.g. "-oProxyCommand=..."), no whitespace,
  control characters or ":" (scp's host:path separator). Raises LaunchError naming `flag`."""
  name = host.rsplit("@", 1)[-1]
  bad = [c for c in host if c.isspace() or not c.isprintable() or c == ":"]
  if not name or host.startswith("-") or name.startswith("-") or bad:
    raise LaunchError(f"{flag} {host!r} is not a host name (it must not start with '-' or hold "
                      "spaces, control characters or ':')")
  return host


def train_argv(args: argparse.Namespace) -> list[str]:
  """`.venv/bin/rlthink train --gin_file ... [--gin_param ...] --workdir ...` (in the repo)."""
  argv = [".venv/bin/rlthink", "train"]
  for gin_file in args.gin_file:
    argv += ["--gin_file", gin_file]
  for param in args.gin_param:
    argv += ["--gin_param", param]
  return argv + ["--workdir", args.workdir]


def train_env(args: argparse.Namespace, env: dict) -> dict[str, str]:
  """--env variables, then the launcher's own (which win)."""
  variables = dict(item.split("=", 1) for item in args.env)
  variables.update({k: str(v) for k, v in env.items()})
  return variables


def train_command(args: argparse.Namespace, env: dict, cd: str | None) -> str:
  """The shell command one host runs: `cd DIR && VARS rlthink train --gin_file ... --workdir`."""
  assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in train_env(args, env).items())
  command = f"{assignments} {shlex.join(train_argv(args))}".strip()
  return f"cd {shlex.quote(cd)} && {command}" if cd else command


def unpack_and_setup(remote_dir: str, extra: str, setup: str | None) -> str:
  """Remote shell command: unpack the copied archive into remote_dir, then install."""
  directory = shlex.quote(remote_dir)
  install = setup if setup is not None else SETUP.format(dir=directory, extra=extra)
  return (f"mkdir -p {directory} && tar -xzf {REMOTE_ARCHIVE} -C {directory} && "
          f"rm {REMOTE_ARCHIVE} && {install}")


def source_files(repo: str = REPO_ROOT) -> list[str]:
  """The checkout's files as git sees them: tracked plus untracked-but-not-ignored."""
  out = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], check=True, capture_output=True, text=True).stdout
  return sorted(f for f in set(out.split("\0")) if f and os.path.isfile(os.path.join(repo, f)))


def pack_source(dry_run: bool, path: str = SOURCE_ARCHIVE) -> str:
  """Packs this checkout (see `source_files`) into `path`; in a dry run only says so."""
  files = source_files()
  print(f"# pack {len(files)} files of {REPO_ROOT} (git ls-files: tracked and untracked, "
        f"not ignored) into {path}", flush=True)
  if not dry_run:
    with tarfile.open(path, "w:gz") as tar:
      for f in files:
        tar.add(os.path.join(REPO_ROOT, f), arcname=f)
  return path


def execute(plan: list[list[Command]], dry_run: bool) -> int:
  """Prints the plan (dry run) or prints and runs it step by step; returns the exit status."""
  for step in plan:
    if dry_run:
      for command in step:
        print(command.shell() + (" &" if len(step) > 1 else ""))
      if len(step) > 1:
        print("wait")
      continue
    status = _run_step(step)
    if status:
      print(f"# failed with exit status {status}; stopping", file=sys.stderr)
      return status
  sys.stdout.flush()
  return 0


def _run_step(step: list[Command]) -> int:
  procs = []
  for command in step:
    print("+ " + command.shell(), flush=True)
    if command.unless and subprocess.run(command.unless, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL).returncode == 0:
      continue
    proc = subprocess.Popen(command.argv, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE if command.stdin is not None else None)
    if command.stdin is not None:
      proc.stdin.write(command.stdin)
      proc.stdin.close()
    prefix = f"[{command.label}] " if command.label and len(step) > 1 else ""
    reader = threading.Thread(target=_relay, args=(proc.stdout, prefix), daemon=True)
    reader.start()
    procs.append((proc, reader))
  status = 0
  try:
    while procs and not status:
      for proc, reader in list(procs):
        try:
          code = proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
          continue
        reader.join()
        procs.remove((proc, reader))
        status = status or code
  except KeyboardInterrupt:
    status = 130
  for proc, _ in procs:  # one host failed: stop the others instead of waiting on them
    proc.terminate()
    proc.wait()
  return status


def _relay(stream, prefix: str) -> None:
  for line in stream:
    sys.stdout.write(prefix + line)
    sys.stdout.flush()


def main(build_plan, parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
  """Parses flags, builds the plan (printing its header) and runs or prints it.
  A LaunchError ends the script with status 2 and the message."""
  args = parser.parse_args(argv)
  try:
    plan = build_plan(args)
  except LaunchError as e:
    parser.exit(2, f"{parser.prog}: error: {e}\n")
  return execute(plan, args.dry_run)
