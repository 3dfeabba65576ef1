#!/usr/bin/env bash
# Installs the client drivers the driver tests run (once, idempotently),
# under a cache directory outside the repository:
#   python: psycopg2, psycopg 3, asyncpg, SQLAlchemy (a virtualenv)
#   node:   node-postgres (pg)
# Usage: scripts/drivers.sh install | python | node
set -euo pipefail

DRIVERS_DIR="${FRESHET_DRIVERS_DIR:-$HOME/.cache/freshet-drivers}"
VENV="$DRIVERS_DIR/venv"
NODE_DIR="$DRIVERS_DIR/node"
PY_PACKAGES=(psycopg2-binary==2.9.10 "psycopg[binary]==3.2.10" asyncpg==0.30.0 SQLAlchemy==2.0.43)

install_python() {
    if [ -f "$VENV/.installed-v1" ]; then return; fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
    touch "$VENV/.installed-v1"
}

install_node() {
    if [ -f "$NODE_DIR/.installed-v1" ]; then return; fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "drivers.sh: npm is missing; node-postgres cannot be installed" >&2
        return 1
    fi
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund pg@8.16.3 >/dev/null)
    touch "$NODE_DIR/.installed-v1"
}

case "${1:-install}" in
    install) install_python; install_node ;;
    python) install_python; echo "$VENV/bin/python" ;;
    node) install_node; echo "$NODE_DIR/node_modules" ;;
    *) echo "usage: $0 install | python | node" >&2; exit 2 ;;
esac
