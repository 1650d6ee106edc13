#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, and every test (unit and integration, against throwaway
# PostgreSQL clusters started from the installed binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
