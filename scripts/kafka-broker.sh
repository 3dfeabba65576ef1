#!/usr/bin/env bash
# kafka-broker.sh start PORT DATADIR | stop DATADIR
# A single-node Kafka-protocol broker for the tests and benchmarks: noida-db
# (a Kafka protocol server with transactions and consumer groups, one
# binary, from PyPI), installed once under $FRESHET_TOOLS (default
# ~/.cache/freshet-tools). `start` prints the bootstrap address when the
# broker accepts connections; state lives in DATADIR (kept across stop/start).
set -euo pipefail
TOOLS="${FRESHET_TOOLS:-$HOME/.cache/freshet-tools}"
BIN="$TOOLS/bin/noida-db-0.2.3"
log() { echo "[kafka-broker] $*" >&2; }

install_broker() {
  [ -x "$BIN" ] && return
  log "installing noida-db 0.2.3 from PyPI into $TOOLS/bin"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
    $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >&2
  fi
  local tmp; tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$tmp" "noida-db==0.2.3" >&2
  python3 -m zipfile -e "$tmp"/*.whl "$tmp/x"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$tmp/x/noida_db/noida-db" "$BIN.part" && mv "$BIN.part" "$BIN"
  rm -rf "$tmp"
}

case "${1:-}" in
  install) install_broker ;;
  start)
    PORT="$2"; DATA="$3"
    install_broker
    mkdir -p "$DATA"
    port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
    if port_open; then log "port $PORT is taken"; exit 1; fi
    setsid nohup "$BIN" start --data-dir "$DATA/state" --host 127.0.0.1 --only kafka \
      --kafka-port "$PORT" >>"$DATA/broker.log" 2>&1 </dev/null &
    echo $! > "$DATA/broker.pid"
    for _ in $(seq 1 300); do
      if port_open; then echo "127.0.0.1:$PORT"; exit 0; fi
      kill -0 "$(cat "$DATA/broker.pid")" 2>/dev/null || break
      sleep 0.1
    done
    log "broker did not come up:"; tail -20 "$DATA/broker.log" >&2; exit 1 ;;
  stop)
    DATA="$2"; PIDF="$DATA/broker.pid"
    if [ -f "$PIDF" ] && pid="$(cat "$PIDF")" && kill -0 "$pid" 2>/dev/null; then
      kill -INT "$pid" 2>/dev/null || true   # noida-db saves its state on SIGINT
      for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        [ "$i" = 50 ] && kill -TERM "$pid" 2>/dev/null || true
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDF" ;;
  *) echo "usage: $0 install | start PORT DATADIR | stop DATADIR" >&2; exit 2 ;;
esac
