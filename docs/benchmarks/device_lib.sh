# Shared set-up of the session-3 device scripts (sourced): environment, result paths and `job`.
# At most 8 files come back from the device tool: each script writes results.jsonl, all.log and
# commit.txt (plus profile summaries) under $OUT.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 PYTHONPATH=$PWD
R="$OUT/results.jsonl"; L="$OUT/all.log"
job() {  # job NAME TIMEOUT CMD...: runs CMD, its log appended to all.log under a header
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "/tmp/$name.log" 2>&1; local rc=$?
  { echo "== $name rc=$rc"; grep -v "^{\|Delay kernel" "/tmp/$name.log" | tail -n 14; } >> "$L"
}
git rev-parse HEAD > "$OUT/commit.txt"; git status --short >> "$OUT/commit.txt"
