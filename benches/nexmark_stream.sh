#!/usr/bin/env bash
# Nexmark as streams (`make bench-nexmark-stream`): for each query of
# sql/nexmark/, a fresh release server with N workers, the three streams as
# nexmark sources (sql/nexmark/sources.sql, unpaced), the query as a
# materialized view; the time from CREATE until the view has read EVENTS
# events of every stream it reads gives events/s; peak RSS from VmHWM; the
# server's CPU time over that wall time gives the cores it kept busy (2.0 on
# this machine is both; between 1 and 2 says how much of the epoch is serial).
# Then, on one server with the same events loaded into tables, each query
# once as a DataFusion batch (SELECT count(*) FROM (query)): batch events/s
# and the ratio stream/batch.
# Usage: benches/nexmark_stream.sh [EVENTS] [WORKERS] [QUERY ...]
#   (default 1000000 events, workers 1 and 2, every query)
set -euo pipefail
BIN=${FRESHET_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/freshet-target}/release/freshet}
[ -x "$BIN" ] || { echo "build the release binary first (cargo build --release)"; exit 1; }
EVENTS=${1:-1000000}; shift || true
WORKERS=${1:-"1 2"}; shift || true
DIR=$(cd "$(dirname "$0")/../sql/nexmark" && pwd)
QUERIES=${*:-$(ls "$DIR" | grep -E '^q[0-9]+\.sql$' | sed 's/\.sql$//' | sort -V)}
PSQL="psql -X -q -t -A -h 127.0.0.1 -U freshet"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' /proc/$1/stat; }
start_server() { # port data workers
  FRESHET_LOG=warn "$BIN" serve --listen 127.0.0.1:$1 --data-dir "$2" --sync-commits false --workers $3 &
  PID=$!
  until $PSQL -p $1 -c "SELECT 1" >/dev/null 2>&1; do sleep 0.05; done
}

# The batch side: one server, the same events in tables.
BDATA=$(mktemp -d) BPORT=$((20000 + RANDOM % 20000))
start_server $BPORT "$BDATA" 2; BPID=$PID
$PSQL -p $BPORT -f "$DIR/tables.sql"
for ((first = 0; first < EVENTS; first += 1000000)); do
  n=$(( EVENTS - first < 1000000 ? EVENTS - first : 1000000 ))
  for s in person auction bid; do
    $PSQL -p $BPORT -c "INSERT INTO $s SELECT * FROM nexmark('$s', $n, $first)"
  done
done
declare -A BATCH
for Q in $QUERIES; do
  QUERY=$(grep -v '^ *--' "$DIR/$Q.sql")
  start=$(now)
  $PSQL -p $BPORT -c "SELECT count(*) FROM ($QUERY) AS q" >/dev/null
  BATCH[$Q]=$(since $start)
done
kill $BPID; wait $BPID 2>/dev/null || true; rm -rf "$BDATA"

printf "%-5s %7s %12s %12s %8s %10s %6s\n" query workers "stream ev/s" "batch ev/s" ratio "peak MiB" cores
for Q in $QUERIES; do
  for W in $WORKERS; do
    DATA=$(mktemp -d) PORT=$((20000 + RANDOM % 20000))
    start_server $PORT "$DATA" $W
    $PSQL -p $PORT -v events=$EVENTS -f "$DIR/sources.sql"
    QUERY=$(grep -v '^ *--' "$DIR/$Q.sql")
    start=$(now) cpu_start=$(cpu_seconds $PID)
    $PSQL -p $PORT -c "CREATE MATERIALIZED VIEW $Q AS $QUERY"
    until [ "$($PSQL -p $PORT -c "SELECT sources_done FROM freshet_catalog.materialized_views WHERE name = '$Q'")" = t ]; do
      sleep 0.05
    done
    stream=$(since $start) cpu=$(awk -v a="$cpu_start" -v b="$(cpu_seconds $PID)" 'BEGIN { print b - a }')
    peak=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$PID/status)
    awk -v q=$Q -v w=$W -v e=$EVENTS -v s=$stream -v b=${BATCH[$Q]} -v r=$peak -v c=$cpu \
      'BEGIN { printf "%-5s %7d %12.0f %12.0f %8.3f %10d %6.2f\n", q, w, e / s, e / b, b / s, r, c / s }'
    kill $PID; wait $PID 2>/dev/null || true
    rm -rf "$DATA"
  done
done
