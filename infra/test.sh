#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors), the SAM template lint,
# every test. It installs whatever the tests need, so it runs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# template.yaml: cfn-lint from PyPI (offline once installed; needs a region and no account).
if ! command -v cfn-lint >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'cfn-lint>=1,<2'
fi
AWS_DEFAULT_REGION=us-east-1 cfn-lint template.yaml
echo "template.yaml: cfn-lint clean"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
