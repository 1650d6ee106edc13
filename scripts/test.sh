#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, the state machine definition and the infrastructure template checked
# by independent validators (asl-validator; cfn-lint, sam validate --lint, checkov), and every test (unit and integration, against throwaway PostgreSQL clusters started from the installed
# binaries). Ends with one tally line over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
.tools/node_modules/.bin/asl-validator --json-path statemachine/pipeline.asl.json
cfn-lint infra/template.yaml
SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 .tools/iac/bin/sam validate --lint --template-file infra/template.yaml
.tools/iac/bin/checkov -f infra/template.yaml --framework cloudformation --skip-download --compact --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
