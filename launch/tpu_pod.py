#!/usr/bin/env python3
"""Run one rlthink experiment on every worker of a Cloud TPU VM pod (created when missing).

    python launch/tpu_pod.py --project my-project --zone us-west4-a --accelerator v5e-16 \\
        --gin_file configs/experiments/quickstart.gin --workdir /mnt/shared/runs/quickstart \\
        [--gin_param "SFTConfig.steps = 100"] [--tpu_name NAME] [--spot] [--dry_run]

Steps (each printed before it runs; --dry_run prints them as a shell script and runs nothing):
  1. `gcloud compute tpus tpu-vm describe` the TPU; `create` it when that fails (reuse by name).
  2. Copy this checkout to every worker and install it (uv, Python 3.11, `pip install -e .[tpu]`);
     --no_sync skips this when the workers already have the code.
  3. `gcloud compute tpus tpu-vm ssh --worker=all`: every worker runs the same `rlthink train`,
     one process per worker using all its chips; JAX finds the other workers itself
     (RLTHINK_DISTRIBUTED=cluster) and checks their number (RLTHINK_NUM_PROCESSES).
The workdir must be on storage every worker mounts (Filestore NFS or a gcsfuse bucket mount; see
launch/README.md). gcloud's own login and defaults are used; no credentials live in the repo.
--project / --zone default to gcloud's CLOUDSDK_CORE_PROJECT / CLOUDSDK_COMPUTE_ZONE variables.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import common

# generation: (accelerator-type prefix, number in the name counts "chips" or "cores",
#              TensorCores per chip, most chips on one host, default runtime version)
GENERATIONS = {
    "v2": ("v2", "cores", 2, 4, "tpu-ubuntu2204-base"),
    "v3": ("v3", "cores", 2, 4, "tpu-ubuntu2204-base"),
    "v4": ("v4", "cores", 2, 4, "tpu-ubuntu2204-base"),
    "v5p": ("v5p", "cores", 2, 4, "v2-alpha-tpuv5"),
    "v5e": ("v5litepod", "chips", 1, 8, "v2-alpha-tpuv5-lite"),
    "v5litepod": ("v5litepod", "chips", 1, 8, "v2-alpha-tpuv5-lite"),
    "v6e": ("v6e", "chips", 1, 8, "v2-alpha-tpuv6e"),
}
CHIPS_PER_HOST_IN_PODS = 4  # hosts of multi-host slices carry 4 chips


def parse_accelerator(name: str) -> tuple[str, int, int, str]:
  """'v5e-16' -> ('v5litepod-16', hosts 4, chips per host 4, default runtime version)."""
  match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name or "")
  if not match or match[1] not in GENERATIONS:
    raise common.LaunchError(f"--accelerator {name!r} is not a TPU type like v5e-16, "
                             f"v5litepod-16, v6e-16, v5p-32 or v4-32 (generations: "
                             f"{sorted(GENERATIONS)})")
  prefix, unit, cores_per_chip, single_host_chips, runtime = GENERATIONS[match[1]]
  count = int(match[2])
  chips = count // cores_per_chip if unit == "cores" else count
  if chips < 1 or count % cores_per_chip:
    raise common.LaunchError(f"--accelerator {name!r}: {count} {unit} is not a TPU slice size")
  if chips <= single_host_chips:
    return f"{prefix}-{count}", 1, chips, runtime
  if chips % CHIPS_PER_HOST_IN_PODS:
    raise common.LaunchError(f"--accelerator {name!r}: {chips} chips do not split into hosts "
                             f"of {CHIPS_PER_HOST_IN_PODS}")
  return f"{prefix}-{count}", chips // CHIPS_PER_HOST_IN_PODS, CHIPS_PER_HOST_IN_PODS, runtime


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="launch/tpu_pod.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  tpu = parser.add_argument_group("TPU")
  tpu.add_argument("--project", default=os.environ.get("CLOUDSDK_CORE_PROJECT"),
                   help="Google Cloud project")
  tpu.add_argument("--zone", default=os.environ.get("CLOUDSDK_COMPUTE_ZONE"),
                   help="zone with TPU quota, e.g. us-west4-a")
  tpu.add_argument("--accelerator", help="TPU type, e.g. v5e-16 (= v5litepod-16), v6e-16, v4-32")
  tpu.add_argument("--tpu_name", help="TPU VM name (default: rlthink-<accelerator type>)")
  tpu.add_argument("--runtime_version", help="TPU software version (default: per generation)")
  tpu.add_argument("--spot", action="store_true", help="create a Spot (preemptible) TPU")
  common.add_run_args(parser)
  return parser


def build_plan(args: argparse.Namespace) -> list[list[common.Command]]:
  missing = [f"--{name}" for name in ("project", "zone", "accelerator") if not getattr(args, name)]
  if missing:
    raise common.LaunchError(f"missing {', '.join(missing)} (project and zone may also come from "
                             "CLOUDSDK_CORE_PROJECT / CLOUDSDK_COMPUTE_ZONE)")
  accelerator, hosts, chips_per_host, runtime = parse_accelerator(args.accelerator)
  common.check_run_args(args, hosts)
  name = common.check_host("--tpu_name", args.tpu_name or f"rlthink-{accelerator}")
  where = [f"--zone={args.zone}", f"--project={args.project}"]
  tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  print(f"# TPU VM {name}: {accelerator} = {hosts} host(s) x {chips_per_host} chips, "
        f"zone {args.zone}, project {args.project}")
  print(f"# experiment {' '.join(args.gin_file)}; workdir {args.workdir}; {hosts} process(es), "
        "one per TPU VM worker")
  print(f"# delete it when done: {' '.join(tpu_vm)} delete {name} {' '.join(where)} --quiet")

  create = tpu_vm + ["create", name, *where, f"--accelerator-type={accelerator}",
                     f"--version={args.runtime_version or runtime}"] + (
                         ["--spot"] if args.spot else [])
  plan = [[common.Command(create, unless=tpu_vm + ["describe", name, *where])]]
  ssh_all = tpu_vm + ["ssh", name, *where, "--worker=all"]
  if not args.no_sync:
    archive = common.pack_source(args.dry_run)
    plan.append([common.Command(tpu_vm + ["scp", archive, f"{name}:{common.REMOTE_ARCHIVE}",
                                          *where, "--worker=all"])])
    setup = common.unpack_and_setup(args.remote_dir, "tpu", args.setup)
    plan.append([common.Command(ssh_all + [f"--command={setup}"])])
  env = {"RLTHINK_DISTRIBUTED": "cluster", "RLTHINK_NUM_PROCESSES": hosts} if hosts > 1 else {}
  train = common.train_command(args, env, args.remote_dir)
  plan.append([common.Command(ssh_all + [f"--command={train}"])])
  return plan


if __name__ == "__main__":
  sys.exit(common.main(build_plan, build_parser()))
