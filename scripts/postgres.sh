#!/usr/bin/env bash
# postgres.sh install | start PORT DATADIR | stop DATADIR | restart PORT DATADIR
# A throwaway PostgreSQL server for the CDC and sink tests: 127.0.0.1 only,
# wal_level = logical, trust authentication (also for replication), fsync
# off. `start` prints a connection URL once the server accepts connections;
# the data lives in DATADIR (kept across stop/start, removed by the caller).
# The server binaries come from Debian's `postgresql` package (installed
# here if missing, without its default cluster).
set -euo pipefail
log() { echo "[postgres] $*" >&2; }

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

install_server() {
  find_bindir >/dev/null && return
  log "installing Debian package 'postgresql' (no default cluster)"
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/99-freshet-no-main.conf >/dev/null
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
}

# Server tools run as 'postgres' when we are root (postgres refuses root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  PORT="$1"; DATA="$2"
  install_server
  BIN="$(find_bindir)"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then log "port $PORT is taken"; exit 1; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA"
    chmod 700 "$DATA"
    as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DATA.initdb.log" 2>&1 \
      || { cat "$DATA.initdb.log" >&2; exit 1; }
    rm -f "$DATA.initdb.log"
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DATA'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_connections = 100
fsync = off
full_page_writes = off
log_min_messages = warning
CONF
    cat >"$DATA/pg_hba.conf" <<HBA
local all         all                trust
local replication all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
HBA
  fi
  as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -o "-p $PORT" -w -t 60 start >&2 \
    || { tail -20 "$DATA/server.log" >&2; exit 1; }
  echo "postgres://postgres@127.0.0.1:$PORT/postgres"
}

stop() {
  DATA="$1"
  BIN="$(find_bindir || true)"
  if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then
    as_postgres "$BIN/pg_ctl" -D "$DATA" -m "${2:-fast}" -w -t 60 stop >&2 || true
  fi
}

case "${1:-}" in
  install) install_server ;;
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  # An immediate stop (like a crash), then a start on the same data.
  restart) stop "$3" immediate; start "$2" "$3" ;;
  *) echo "usage: $0 install | start PORT DATADIR | stop DATADIR | restart PORT DATADIR" >&2; exit 2 ;;
esac
