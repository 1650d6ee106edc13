#!/usr/bin/env bash
# Builds what `sam deploy` uploads: the three Lambda `bootstrap` binaries (planner, extractor, loader) for arm64
# (Graviton, `provided.al2023`), by `sam build` with `BuildMethod: rust-cargolambda` from infra/template.yaml, into
# .aws-sam/build; then prints each function's zip size. The tools come from PyPI into .tools/iac (aws-sam-cli,
# cargo-lambda, and zig, which cargo-lambda cross-compiles with): no Docker, no AWS account.
#   https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/building-rust.html
# Then: sam deploy --guided --template-file .aws-sam/build/template.yaml (docs/deploy.md).
#
#   scripts/package.sh [--ca-bundle FILE]
#
# --ca-bundle FILE: the RDS CA bundle (global-bundle.pem) from a file instead of downloading it, so the build runs
# where only the crates and PyPI are reachable.
set -euo pipefail
CA_BUNDLE=
while [ $# -gt 0 ]; do
  case "$1" in
    --ca-bundle) CA_BUNDLE=$(realpath "${2:?--ca-bundle needs a file}"); shift 2 ;;
    *) echo "package: unknown argument $1 (use --ca-bundle FILE)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
started=$(date +%s)
VENV=.tools/iac
if [ ! -x "$VENV/bin/sam" ] || [ ! -x "$VENV/bin/cargo-lambda" ] || ! "$VENV/bin/python" -c "import ziglang" 2>/dev/null; then
  echo "package: installing aws-sam-cli, cargo-lambda and zig into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check aws-sam-cli cargo-lambda ziglang
fi
export PATH="$PWD/$VENV/bin:$PATH"
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
# rust-cargolambda is a beta build method of SAM: opted in here, not by a prompt.
export SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
export SAM_CLI_TELEMETRY=0
# SAM copies the binaries from <CodeUri>/target/lambda/<bin>/bootstrap: a CARGO_TARGET_DIR elsewhere would hide them.
unset CARGO_TARGET_DIR
sam build --template-file infra/template.yaml --build-dir .aws-sam/build

# The RDS CA bundle beside the planner's and the extractor's bootstrap: the template's source URL verifies the
# server against /var/task/rds-global-bundle.pem (sslmode=verify-full; /var/task is LAMBDA_TASK_ROOT, where the zip
# is unpacked). The bundle of every region, from
# https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.SSL.html#UsingWithRDS.SSL.CertificatesAllRegions
BUNDLE_URL=https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
bundle=$(mktemp)
if [ -n "$CA_BUNDLE" ]; then
  grep -q -- "-----BEGIN CERTIFICATE-----" "$CA_BUNDLE" || { echo "package: --ca-bundle $CA_BUNDLE is not a PEM bundle" >&2; exit 1; }
  cp "$CA_BUNDLE" "$bundle"
elif ! python3 - "$BUNDLE_URL" "$bundle" <<'PY'
import sys, urllib.request
data = urllib.request.urlopen(sys.argv[1], timeout=30).read()
if b"-----BEGIN CERTIFICATE-----" not in data:
    sys.exit(f"{sys.argv[1]}: not a PEM bundle")
open(sys.argv[2], "wb").write(data)
PY
then
  echo "package: could not download the RDS CA bundle from $BUNDLE_URL; without it sslmode=verify-full cannot connect." >&2
  echo "         Download it where you can and pass it: scripts/package.sh --ca-bundle global-bundle.pem;" >&2
  echo "         or deploy with SourceSslMode=require." >&2
  exit 1
fi
for f in PlannerFunction ExtractorFunction; do cp "$bundle" ".aws-sam/build/$f/rds-global-bundle.pem"; done
echo "package: RDS CA bundle ($(grep -c 'BEGIN CERTIFICATE' "$bundle") certificates) added to the planner and the extractor"

echo "== the functions as Lambda receives them (zip of bootstrap)"
for f in PlannerFunction ExtractorFunction LoaderFunction; do
  bin=.aws-sam/build/$f/bootstrap
  [ -x "$bin" ] || { echo "package: $bin was not built" >&2; exit 1; }
  zip=$(mktemp -d)/$f.zip
  (cd "$(dirname "$bin")" && python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1],'w',zipfile.ZIP_DEFLATED,compresslevel=9); [z.write(n) for n in ('bootstrap', 'rds-global-bundle.pem') if __import__('os').path.exists(n)]; z.close()" "$zip")
  printf '  %-18s bootstrap %6.1f MB   zip %6.1f MB   %s\n' "$f" \
    "$(python3 -c "import os,sys; print(os.path.getsize(sys.argv[1])/1e6)" "$bin")" \
    "$(python3 -c "import os,sys; print(os.path.getsize(sys.argv[1])/1e6)" "$zip")" \
    "$(file -b "$bin" 2>/dev/null | cut -d, -f1-2)"
done
echo "package: built in $(( $(date +%s) - started )) s"
