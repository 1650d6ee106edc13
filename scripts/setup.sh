#!/usr/bin/env bash
# Installs what pgshift's tests and demo need on a fresh Debian/Ubuntu machine with Rust:
# PostgreSQL server binaries (initdb, postgres, psql) and pyarrow (the tests' second Parquet reader).
# Idempotent: installs only what is missing.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

have_pg_server() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_pg_server || ! command -v psql >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL server binaries" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi

if ! python3 -c 'import pyarrow' >/dev/null 2>&1; then
  echo "setup: installing pyarrow" >&2
  python3 -m pip install -q --disable-pip-version-check pyarrow \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages pyarrow
fi
