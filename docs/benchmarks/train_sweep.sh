#!/usr/bin/env bash
# Runs `python3 -m rlthink.bench.train` once per variant (one process each, so XLA_FLAGS can differ),
# appending every JSON line to $OUT/$TAG.jsonl, logs to $OUT/$TAG.log, profile summaries and the
# compiled HLO to $OUT/$TAG.prof.tar.gz. Used on the lent GPU for docs/benchmarks/train.md:
#   TAG=r1 bash docs/benchmarks/train_sweep.sh "name|XLA_FLAGS|bench args" ...
set -u
OUT=${OUT:-/tmp/out}; TAG=${TAG:-sweep}; PER=${PER:-150}
mkdir -p "$OUT" /tmp/prof
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu \
  --format=csv >> "$OUT/$TAG.log" 2>&1
for spec in "$@"; do
  IFS='|' read -r name flags bargs <<< "$spec"
  echo "=== $name | XLA_FLAGS=$flags | $bargs" | tee -a "$OUT/$TAG.log"
  start=$(date +%s)
  XLA_FLAGS="$flags" timeout "$PER" python3 -m rlthink.bench.train $bargs \
    --out "$OUT/$TAG.jsonl" >> "$OUT/$TAG.log" 2>&1
  echo "=== $name rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/$TAG.log"
  grep -E "^(model|qwen|tiny)" "$OUT/$TAG.log" | tail -n 3
done
find /tmp/prof -name '*.ops.txt' -o -name '*.hlo.txt' | tar czf "$OUT/$TAG.prof.tar.gz" -T - 2>/dev/null
for f in $(find /tmp/prof -name "*.ops.txt"); do echo "## $f"; head -n 30 "$f"; done
