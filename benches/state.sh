#!/usr/bin/env bash
# State benchmarks on the release binary (`make bench-state`):
#   - load: KEYS rows into a table feeding an aggregate view (KEYS groups) and a
#     join view (KEYS join keys per side), in 100k-row INSERTs; rows/s;
#   - re-hit: 500k more rows whose group keys are spread over all existing
#     groups, so with a small budget most groups must be read back from disk;
#   - recovery: kill -9, restart, time until the first SELECT on the aggregate
#     view is answered; and the data dir's size.
# Usage: benches/state.sh KEYS BUDGET_MB [KEYS BUDGET_MB ...]
# (default: 1000000 2048  1000000 64  6000000 2048)
set -euo pipefail
BIN=${FRESHET_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/freshet-target}/release/freshet}
CHUNK=100000
PSQL="psql -X -q -t -A -h 127.0.0.1 -U freshet"
[ -x "$BIN" ] || { echo "build the release binary first (cargo test --release --no-run)"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a / b }'; }
wait_ready() { until $PSQL -p "$1" -c "SELECT 1" >/dev/null 2>&1; do sleep 0.01; done; }
set -- ${@:-1000000 2048 1000000 64 6000000 2048}
while [ $# -ge 2 ]; do
  KEYS=$1 BUDGET=$2; shift 2
  DIR=$(mktemp -d) PORT=$((20000 + RANDOM % 20000))
  FRESHET_LOG=warn "$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DIR" --memory-budget-mb "$BUDGET" --sync-commits false &
  PID=$!
  wait_ready $PORT
  $PSQL -p $PORT -c "CREATE TABLE t (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT)" \
    -c "CREATE TABLE b (k BIGINT PRIMARY KEY, w BIGINT)" \
    -c "CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k" \
    -c "CREATE MATERIALIZED VIEW j AS SELECT t.id, b.w FROM t JOIN b ON t.k = b.k"
  start=$(now)
  for ((first = 1; first <= KEYS; first += CHUNK)); do
    last=$((first + CHUNK - 1))
    $PSQL -p $PORT -c "INSERT INTO t SELECT value AS id, value AS k, value AS v FROM generate_series($first, $last)" \
      -c "INSERT INTO b SELECT value AS k, value % 1000 AS w FROM generate_series($first, $last)"
  done
  load=$(since $start)
  rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$PID/status)
  start=$(now)
  for ((i = 0; i < 5; i++)); do
    first=$((KEYS + 1 + i * CHUNK)) last=$((KEYS + (i + 1) * CHUNK))
    $PSQL -p $PORT -c "INSERT INTO t SELECT value AS id, (value * 7919) % $KEYS + 1 AS k, 1 AS v FROM generate_series($first, $last)"
  done
  rehit=$(since $start)
  kill -9 $PID; wait $PID 2>/dev/null || true
  size=$(du -sm "$DIR" | cut -f1)
  start=$(now)
  FRESHET_LOG=warn "$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DIR" --memory-budget-mb "$BUDGET" --sync-commits false &
  PID=$!
  until $PSQL -p $PORT -c "SELECT c FROM agg WHERE k = 1" >/dev/null 2>&1; do sleep 0.005; done
  recovery=$(since $start)
  check=$($PSQL -p $PORT -c "SELECT (SELECT count(*) FROM agg) = $KEYS AND (SELECT sum(c) FROM agg) = $((KEYS + 5 * CHUNK))")
  kill -9 $PID; wait $PID 2>/dev/null || true
  rm -rf "$DIR"
  echo "keys=$KEYS budget=${BUDGET}MiB data_dir=${size}MiB load=$(ratio $KEYS $load) rows/s (x2 tables)" \
    "rss_after_load=${rss}MiB rehit=$(ratio $((5 * CHUNK)) $rehit) rows/s recovery=${recovery}s views_correct=$check"
done
