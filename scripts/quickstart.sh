#!/usr/bin/env bash
# The README's first command: creates .venv with python3 if it is missing, installs rlthink, and
# runs the main job — `rlthink train` on its embedded default (configs/experiments/quickstart.gin:
# the tiny model, SFT then Expert Iteration on tiny arithmetic, on CPU). Extra arguments go to
# `rlthink train`, e.g. `bash scripts/quickstart.sh --workdir /tmp/run --gin_param "EIConfig.iterations = 3"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv with $(command -v python3)"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e .

args=("$@")
has_workdir=0
for a in "${args[@]}"; do [[ $a == --workdir* ]] && has_workdir=1; done
if [[ $has_workdir -eq 0 ]]; then
  args+=(--workdir workdir/quickstart)
fi
exec .venv/bin/rlthink train "${args[@]}"
