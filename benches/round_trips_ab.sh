#!/usr/bin/env bash
# A/B of two freshet binaries on a pgbench workload, in alternating rounds
# A, B, A, B, … so that drift on the machine hits both alike. Prints each
# round's transactions/s and, per protocol, the median of B over the
# median of A. Every round starts a fresh server on a fresh data dir.
#
# Build the two binaries from two commits (or with and without a change),
# copy them aside, then:
#   benches/round_trips_ab.sh BIN_A BIN_B [ROUNDS] [SECONDS] [CLIENTS]
# Defaults: 5 rounds of 10 s, 8 clients on one pgbench thread.
#
# The workload is `SELECT 1` unless the environment names another:
#   SETUP=setup.sql   run with psql once the server is up (tables, views, rows)
#   SCRIPT=script.sql the pgbench script (pgbench variables such as :id work)
# e.g. benches/ab/ingest.sql and benches/ab/point_read.sql (see their heads).
set -euo pipefail
# A failing setup or pgbench run stops the comparison (not a round of 0 tps).
shopt -s inherit_errexit
a=$1 b=$2 rounds=${3:-5} seconds=${4:-10} clients=${5:-8}
command -v pgbench >/dev/null || { echo "needs pgbench (postgresql-contrib / postgresql)" >&2; exit 1; }
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
script=${SCRIPT:-$work/select1.sql}
[ -n "${SCRIPT:-}" ] || echo "SELECT 1;" > "$script"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# round BIN MODE: one fresh server, the setup, one pgbench run: transactions/s.
round() {
    local port pid tps data
    port=$(free_port)
    data=$(mktemp -d -p "$work")
    FRESHET_LOG=warn "$1" serve --listen "127.0.0.1:$port" --data-dir "$data" >/dev/null 2>&1 &
    pid=$!
    until pg_isready -q -h 127.0.0.1 -p "$port"; do sleep 0.1; done
    if [ -n "${SETUP:-}" ]; then
        psql -X -q -h 127.0.0.1 -p "$port" -U freshet -v ON_ERROR_STOP=1 -f "$SETUP" freshet >/dev/null
    fi
    tps=$(pgbench -n -M "$2" -f "$script" -c "$clients" -j 1 -T "$seconds" \
        -h 127.0.0.1 -p "$port" -U freshet freshet 2>"$work/pgbench.err" | awk '/^tps/ {print $3}')
    [ -n "$tps" ] || { cat "$work/pgbench.err" >&2; exit 1; }
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    echo "$tps"
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

for mode in ${MODES:-simple extended}; do
    : > "$work/a" && : > "$work/b"
    for r in $(seq "$rounds"); do
        ta=$(round "$a" "$mode") && echo "$ta" >> "$work/a"
        tb=$(round "$b" "$mode") && echo "$tb" >> "$work/b"
        printf '%-8s round %d: A %10.0f tps   B %10.0f tps\n' "$mode" "$r" "$ta" "$tb"
    done
    ma=$(median < "$work/a") mb=$(median < "$work/b")
    awk -v m="$mode" -v a="$ma" -v b="$mb" 'BEGIN {printf "%-8s median: A %.0f tps, B %.0f tps, B/A = %.3f\n", m, a, b, b / a}'
done
