#!/usr/bin/env bash
# Installs what pgshift's tests and demo need on a fresh Debian/Ubuntu machine with Rust:
# PostgreSQL server binaries (initdb, postgres, psql), openssl (TLS certificates for the test cluster), Chromium (the
# run report's headless browser test), pyarrow (the tests' second Parquet reader), sqlglot (a second parser of the
# Redshift SQL), and the
# asl-validator npm package (an independent check of statemachine/pipeline.asl.json) under .tools/, and cfn-lint,
# aws-sam-cli and checkov (the checks of infra/template.yaml; the last two in .tools/iac).
# Idempotent: installs only what is missing. `scripts/setup.sh --demo`: only what the demo uses (the PostgreSQL server
# binaries and psql).
set -euo pipefail
SAM_VERSION=1.148.0
CHECKOV_VERSION=3.3.30

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
if [ "${1:-}" = --demo ]; then
  exit 0
fi

if ! command -v openssl >/dev/null 2>&1; then
  echo "setup: installing openssl (the tests' TLS certificates)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (the run report's browser test and screenshot)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi

if ! python3 -c 'import pyarrow' >/dev/null 2>&1; then
  echo "setup: installing pyarrow" >&2
  python3 -m pip install -q --disable-pip-version-check pyarrow \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages pyarrow
fi

# sqlglot: an independent parser of the Redshift SQL the loader generates (tests/tests/dialect.rs).
SQLGLOT_VERSION=30.31.0
if ! python3 -c "import sqlglot, sys; sys.exit(sqlglot.__version__ != '$SQLGLOT_VERSION')" >/dev/null 2>&1; then
  echo "setup: installing sqlglot $SQLGLOT_VERSION" >&2
  python3 -m pip install -q --disable-pip-version-check "sqlglot==$SQLGLOT_VERSION" \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "sqlglot==$SQLGLOT_VERSION"
fi

if ! command -v cfn-lint >/dev/null 2>&1; then
  echo "setup: installing cfn-lint" >&2
  python3 -m pip install -q --disable-pip-version-check cfn-lint \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages cfn-lint
fi

# The IaC checks beside cfn-lint: `sam validate --lint` and `checkov --skip-download` (offline), in their own
# virtualenv (their dependencies conflict with each other's and the system's).
IAC="$(cd "$(dirname "$0")/.." && pwd)/.tools/iac"
if [ ! -x "$IAC/bin/sam" ] || [ ! -x "$IAC/bin/checkov" ]; then
  echo "setup: installing aws-sam-cli $SAM_VERSION and checkov $CHECKOV_VERSION into .tools/iac" >&2
  python3 -m venv "$IAC" || { as_root apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$IAC"; }
  "$IAC/bin/pip" install -q --disable-pip-version-check "aws-sam-cli==$SAM_VERSION" "checkov==$CHECKOV_VERSION"
fi

ASL_VALIDATOR_VERSION=4.0.0
TOOLS="$(cd "$(dirname "$0")/.." && pwd)/.tools"
if [ ! -x "$TOOLS/node_modules/.bin/asl-validator" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing Node.js and npm" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "setup: installing asl-validator $ASL_VALIDATOR_VERSION into .tools" >&2
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "asl-validator@$ASL_VALIDATOR_VERSION" >/dev/null
fi
