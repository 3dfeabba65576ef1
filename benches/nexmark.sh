#!/usr/bin/env bash
# Nexmark on the release binary (`make bench-nexmark`): for each query of
# sql/nexmark/, a fresh server, the query as a materialized view over empty
# tables, then EVENTS events loaded in 100k-event INSERTs (each maintaining
# the view); events/s of that load. Then the same query run once as a batch
# by DataFusion over the loaded tables (SELECT count(*) FROM (query)), and
# the ratio streaming/batch, where batch events/s = EVENTS / batch time.
# The pseudo-query `none` loads the tables with no view: the row path's own
# cost (generation, planning the INSERTs, writing the rows).
# Usage: benches/nexmark.sh [EVENTS] [QUERY ...]   (default 1000000, none and all)
set -euo pipefail
BIN=${FRESHET_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/freshet-target}/release/freshet}
[ -x "$BIN" ] || { echo "build the release binary first (cargo test --release --no-run)"; exit 1; }
EVENTS=${1:-1000000}; shift || true
DIR=$(cd "$(dirname "$0")/../sql/nexmark" && pwd)
QUERIES=${*:-none $(ls "$DIR" | grep -E '^q[0-9]+\.sql$' | sed 's/\.sql$//' | sort -V)}
CHUNK=100000
PSQL="psql -X -q -t -A -h 127.0.0.1 -U freshet"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
printf "%-5s %12s %12s %8s %10s\n" query "stream ev/s" "batch ev/s" ratio "RSS MiB"
for Q in $QUERIES; do
  DATA=$(mktemp -d) PORT=$((20000 + RANDOM % 20000))
  FRESHET_LOG=warn "$BIN" serve --listen 127.0.0.1:$PORT --data-dir "$DATA" --sync-commits false &
  PID=$!
  until $PSQL -p $PORT -c "SELECT 1" >/dev/null 2>&1; do sleep 0.05; done
  $PSQL -p $PORT -f "$DIR/tables.sql"
  if [ "$Q" = none ]; then
    QUERY="SELECT * FROM bid"
  else
    QUERY=$(grep -v '^ *--' "$DIR/$Q.sql")
    $PSQL -p $PORT -c "CREATE MATERIALIZED VIEW $Q AS $QUERY"
  fi
  start=$(now)
  for ((first = 0; first < EVENTS; first += CHUNK)); do
    n=$(( EVENTS - first < CHUNK ? EVENTS - first : CHUNK ))
    for s in person auction bid; do
      $PSQL -p $PORT -c "INSERT INTO $s SELECT * FROM nexmark('$s', $n, $first)"
    done
  done
  stream=$(since $start)
  rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$PID/status)
  start=$(now)
  $PSQL -p $PORT -c "SELECT count(*) FROM ($QUERY) AS q" >/dev/null
  batch=$(since $start)
  awk -v q=$Q -v e=$EVENTS -v s=$stream -v b=$batch -v r=$rss \
    'BEGIN { printf "%-5s %12.0f %12.0f %8.3f %10d\n", q, e / s, e / b, b / s, r }'
  kill $PID; wait $PID 2>/dev/null || true
  rm -rf "$DATA"
done
