#!/usr/bin/env python3
"""Run one rlthink experiment as a SLURM job: one task per node, each using every GPU of its node.

    python launch/slurm.py --nodes 2 --gpus_per_node 8 --partition gpu --time 12:00:00 \\
        --gin_file configs/experiments/quickstart.gin --workdir /shared/runs/quickstart \\
        [--login_host login.cluster.org] [--dry_run]

It writes an sbatch script and submits it with `sbatch` (fed on stdin): here, when run on the
cluster's login node in a checkout on shared storage, or through `ssh --login_host` from a laptop
(then this checkout is first copied to --remote_dir on the login host and installed, unless
--no_sync). --dry_run prints the commands and the whole script and submits nothing.
Inside the job, `srun` starts one `rlthink train` per node; JAX reads SLURM_* for the coordinator
(the first node), the process count and each process's id, and RLTHINK_LOCAL_DEVICE_IDS keeps all
GPUs of the node in the one process (JAX's SLURM default is one GPU per task). The job's output
goes to slurm-<job name>-<job id>.out in the repository directory.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

import common


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="launch/slurm.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  job = parser.add_argument_group("job")
  job.add_argument("--nodes", type=int, help="number of nodes (= processes)")
  job.add_argument("--gpus_per_node", type=int, help="GPUs per node, all used by its process")
  job.add_argument("--gpu_type", help="GPU type in the cluster's gres names, e.g. h100")
  job.add_argument("--partition", help="SLURM partition (default: the cluster's)")
  job.add_argument("--account", help="SLURM account to charge")
  job.add_argument("--qos", help="SLURM quality of service")
  job.add_argument("--time", help="time limit, e.g. 12:00:00 (default: the partition's)")
  job.add_argument("--cpus_per_task", type=int, help="CPUs for each node's process")
  job.add_argument("--job_name", default="rlthink")
  job.add_argument("--login_host", help="submit through `ssh LOGIN_HOST sbatch` (from a laptop)")
  common.add_run_args(parser, remote_dir_default=None)
  parser.set_defaults(remote_dir=None)
  return parser


def sbatch_script(args: argparse.Namespace, repo_dir: str) -> str:
  """The job script: #SBATCH lines, the environment and one `srun` of `rlthink train`."""
  gpus = f"{args.gpu_type}:{args.gpus_per_node}" if args.gpu_type else str(args.gpus_per_node)
  options = {"job-name": args.job_name, "nodes": args.nodes, "ntasks-per-node": 1,
             "gpus-per-node": gpus, "time": args.time, "partition": args.partition,
             "account": args.account, "qos": args.qos, "cpus-per-task": args.cpus_per_task,
             "chdir": repo_dir, "output": "slurm-%x-%j.out"}
  lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" for k, v in options.items() if v is not None]
  lines += ["# One process per node; JAX takes the coordinator, process count and id from SLURM.",
            "set -euo pipefail"]
  env = {"RLTHINK_LOCAL_DEVICE_IDS": ",".join(map(str, range(args.gpus_per_node)))}
  if args.cpus_per_task:  # srun does not inherit --cpus-per-task from sbatch (SLURM >= 22.05)
    env["SRUN_CPUS_PER_TASK"] = args.cpus_per_task
  lines += [f"export {k}={shlex.quote(v)}" for k, v in common.train_env(args, env).items()]
  lines.append("srun --kill-on-bad-exit=1 " + shlex.join(common.train_argv(args)))
  return "\n".join(lines) + "\n"


def build_plan(args: argparse.Namespace) -> list[list[common.Command]]:
  missing = [f"--{name}" for name in ("nodes", "gpus_per_node") if getattr(args, name) is None]
  if missing:
    raise common.LaunchError(f"missing {', '.join(missing)}")
  if args.nodes < 1 or args.gpus_per_node < 1:
    raise common.LaunchError(f"--nodes {args.nodes} and --gpus_per_node {args.gpus_per_node} "
                             "must be >= 1")
  if args.gpu_type is not None and not re.fullmatch(r"[\w.\-]+", args.gpu_type):
    raise common.LaunchError(f"--gpu_type {args.gpu_type!r} is not a gres type name like h100")
  common.check_run_args(args, args.nodes)
  remote = args.login_host is not None
  if remote:
    common.check_host("--login_host", args.login_host)
  repo_dir = args.remote_dir or ("rlthink" if remote else common.REPO_ROOT)
  print(f"# SLURM job {args.job_name}: {args.nodes} node(s) x {args.gpus_per_node} GPU(s), "
        f"repository {repo_dir}" + (f" on {args.login_host}" if remote else ""))
  print(f"# experiment {' '.join(args.gin_file)}; workdir {args.workdir}; {args.nodes} "
        "process(es), one per node")
  plan = []
  if remote and not args.no_sync:
    archive = common.pack_source(args.dry_run)
    plan.append([common.Command(["scp", "-o", "BatchMode=yes", archive,
                                 f"{args.login_host}:{common.REMOTE_ARCHIVE}"])])
    setup = common.unpack_and_setup(repo_dir, "cuda", args.setup)
    plan.append([common.Command(["ssh", "-o", "BatchMode=yes", args.login_host, setup])])
  submit = ["ssh", "-o", "BatchMode=yes", args.login_host, "sbatch"] if remote else ["sbatch"]
  plan.append([common.Command(submit, stdin=sbatch_script(args, repo_dir))])
  return plan


if __name__ == "__main__":
  sys.exit(common.main(build_plan, build_parser()))
