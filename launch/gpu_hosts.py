#!/usr/bin/env python3
"""Run one rlthink experiment on one or several GPU machines: one process per host, using all of
its GPUs, joined by jax.distributed (process 0's host is the coordinator).

    python launch/gpu_hosts.py --hosts gpu-a,gpu-b \\
        --gin_file configs/experiments/quickstart.gin --workdir /mnt/shared/runs/quickstart \\
        [--transport gcloud --project my-project --zone us-central1-a] [--dry_run]

Steps (each printed before it runs; --dry_run prints them as a shell script and runs nothing):
  1. Copy this checkout to every host and install it (uv, Python 3.11, `pip install -e .[cuda]`);
     --no_sync skips this when the hosts already have the code (e.g. on shared storage).
  2. On every host at once, over ssh: `rlthink train` with RLTHINK_COORDINATOR=<first host>:<port>,
     RLTHINK_NUM_PROCESSES=<hosts> and RLTHINK_PROCESS_ID=<index in --hosts>. Output is prefixed
     with the host; when one host fails, the others are stopped.
Hosts are `[user@]host` for plain ssh (keys from your ssh agent / config), or Compute Engine
instance names with --transport gcloud. The hosts must reach each other on --coordinator_port and
mount the workdir at the same path. No credentials live in the repo.
"""

from __future__ import annotations

import argparse
import os
import sys

import common


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="launch/gpu_hosts.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  gpu = parser.add_argument_group("hosts")
  gpu.add_argument("--hosts", help="comma-separated hosts, process 0 first: [user@]host for ssh, "
                                   "instance names for gcloud")
  gpu.add_argument("--transport", choices=("ssh", "gcloud"), default="ssh",
                   help="ssh (default) or `gcloud compute ssh` (needs --project and --zone)")
  gpu.add_argument("--project", default=os.environ.get("CLOUDSDK_CORE_PROJECT"),
                   help="Google Cloud project (gcloud transport)")
  gpu.add_argument("--zone", default=os.environ.get("CLOUDSDK_COMPUTE_ZONE"),
                   help="zone of the instances (gcloud transport)")
  gpu.add_argument("--gpus_per_host", type=int, default=None,
                   help="use GPUs 0..N-1 of each host (default: every GPU it has)")
  gpu.add_argument("--coordinator_address", default=None,
                   help="HOST:PORT of process 0 as the others reach it (default: the first "
                        "host and --coordinator_port)")
  gpu.add_argument("--coordinator_port", type=int, default=8476)
  common.add_run_args(parser)
  return parser


def _remote(args, host: str, command: str, tty: bool = False) -> list[str]:
  if args.transport == "gcloud":
    argv = ["gcloud", "compute", "ssh", host, f"--zone={args.zone}", f"--project={args.project}",
            f"--command={command}"]
    return argv + (["--", "-tt"] if tty else [])
  return ["ssh", "-o", "BatchMode=yes"] + (["-tt"] if tty else []) + [host, command]


def _copy(args, source: str, host: str, target: str) -> list[str]:
  if args.transport == "gcloud":
    return ["gcloud", "compute", "scp", source, f"{host}:{target}", f"--zone={args.zone}",
            f"--project={args.project}"]
  return ["scp", "-o", "BatchMode=yes", source, f"{host}:{target}"]


def build_plan(args: argparse.Namespace) -> list[list[common.Command]]:
  hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
  if not hosts:
    raise common.LaunchError("--hosts is required: comma-separated host names, process 0 first")
  for host in hosts:
    common.check_host("--hosts", host)
  if len(set(hosts)) != len(hosts):
    raise common.LaunchError(f"--hosts {args.hosts!r} names a host twice (one process per host)")
  if args.transport == "gcloud":
    missing = [f"--{name}" for name in ("project", "zone") if not getattr(args, name)]
    if missing:
      raise common.LaunchError(f"--transport gcloud needs {' and '.join(missing)} (or "
                               "CLOUDSDK_CORE_PROJECT / CLOUDSDK_COMPUTE_ZONE)")
  if args.gpus_per_host is not None and args.gpus_per_host < 1:
    raise common.LaunchError(f"--gpus_per_host {args.gpus_per_host} must be >= 1")
  common.check_run_args(args, len(hosts))
  coordinator = args.coordinator_address or (
      f"{hosts[0].rsplit('@', 1)[-1]}:{args.coordinator_port}")
  print(f"# {len(hosts)} GPU host(s) over {args.transport}: {', '.join(hosts)}; "
        f"coordinator {coordinator}")
  print(f"# experiment {' '.join(args.gin_file)}; workdir {args.workdir}; {len(hosts)} "
        "process(es), one per host, each using "
        f"{f'GPUs 0..{args.gpus_per_host - 1}' if args.gpus_per_host else 'all its GPUs'}")

  plan = []
  if not args.no_sync:
    archive = common.pack_source(args.dry_run)
    plan.append([common.Command(_copy(args, archive, h, common.REMOTE_ARCHIVE), label=h)
                 for h in hosts])
    setup = common.unpack_and_setup(args.remote_dir, "cuda", args.setup)
    plan.append([common.Command(_remote(args, h, setup), label=h) for h in hosts])
  run = []
  for index, host in enumerate(hosts):
    env = {}
    if len(hosts) > 1:
      env = {"RLTHINK_COORDINATOR": coordinator, "RLTHINK_NUM_PROCESSES": len(hosts),
             "RLTHINK_PROCESS_ID": index}
    if args.gpus_per_host:
      env["RLTHINK_LOCAL_DEVICE_IDS"] = ",".join(map(str, range(args.gpus_per_host)))
    train = common.train_command(args, env, args.remote_dir)
    run.append(common.Command(_remote(args, host, train, tty=True), label=host))
  plan.append(run)
  return plan


if __name__ == "__main__":
  sys.exit(common.main(build_plan, build_parser()))
