#!/usr/bin/env bash
# The project's test command (the README and .ci/run both run exactly this): creates .venv with
# python3 if it is missing, installs rlthink with its dev extras, runs the whole suite with pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -x tests/test_gin_utils.py`.
# Exits non-zero on any failure, and also when pytest collects no tests (its exit status 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv with $(command -v python3)"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[dev]'

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then
  args=(tests)
fi
status=0
.venv/bin/python -m pytest -q "${args[@]}" || status=$?
if [[ $status -eq 5 ]]; then
  echo "scripts/test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$status"
