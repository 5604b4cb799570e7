#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors), the SAM template lint,
# every test. It installs whatever the tests need, so it runs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# On CI (a fresh clone, built once): no incremental-compilation caches, and the disk free at
# the start is printed, since a build that runs out of it fails in odd ways (a linker's
# bus error). The whole run peaks at about 2.7 GB under target/ and tests/fuzz/target/
# (over 10 GB with full debug info and those outputs kept).
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
    df -h . | awk 'NR == 2 { print "disk free at the start: " $4 " of " $2 }'
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# template.yaml: cfn-lint from PyPI (offline once installed; needs a region and no account).
if ! command -v cfn-lint >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'cfn-lint>=1,<2'
fi
AWS_DEFAULT_REGION=us-east-1 cfn-lint template.yaml
echo "template.yaml: cfn-lint clean"
# sam validate --lint: SAM CLI in its own virtualenv under target/ (it pins botocore versions
# other tools on the machine may not want). Offline: a region and dummy credentials only.
if ! command -v sam >/dev/null 2>&1; then
    venv=target/py-sam
    [ -x "$venv/bin/sam" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check 'aws-sam-cli>=1.140,<2'; }
    PATH="$PWD/$venv/bin:$PATH"
fi
SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_EC2_METADATA_DISABLED=true sam validate --lint --template template.yaml

# The Lambda build, as the README shows it: cargo-lambda (PyPI, with zig) cross-compiles the
# functions for arm64 (`provided.al2023`) in release mode; rustup adds the target if
# the toolchain lacks it.
if ! command -v cargo-lambda >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'cargo-lambda>=1.8,<2'
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu
cargo lambda build --release --arm64
# Each bootstrap must be an ELF executable for aarch64 (e_machine 183).
python3 - <<'PY'
import struct, sys
for f in ("ingest", "sync", "deliver", "relay"):
    with open(f"target/lambda/{f}/bootstrap", "rb") as h:
        head = h.read(20)
    if head[:4] != b"\x7fELF" or struct.unpack("<H", head[18:20])[0] != 183:
        sys.exit(f"target/lambda/{f}/bootstrap is not an arm64 executable")
PY
echo "cargo lambda build --release --arm64: ingest, sync, deliver, relay built"
# CI only checks that they build: its cross-compiled objects make room for the tests.
[ "${CI:-}" = true ] && rm -rf target/aarch64-unknown-linux-gnu

# The fuzz targets (tests/fuzz: each inbound format and the rules' inputs) build with
# cargo-fuzz: libFuzzer with AddressSanitizer. This machine's one toolchain is stable, so
# RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags. Running them is not part of the
# suite; the README gives the command and the last run's figures.
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir tests/fuzz
echo "cargo fuzz build: dataverse, business_central, salesforce_cdc, salesforce_soap, fin_ops, generic, rules built"
# Every input of the corpora kept in tests/fuzz/corpora runs once through its target (with
# the sanitizer): what passed when it was found must still pass.
tests/fuzz/run.sh --replay
[ "${CI:-}" = true ] && rm -rf tests/fuzz/target

# moto server: DynamoDB and SQS on loopback for the AWS-adapter tests (dummy credentials;
# nothing but 127.0.0.1 is ever targeted). Started here, stopped when the script exits.
if ! python3 -c 'import moto, flask' >/dev/null 2>&1 || ! command -v moto_server >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto_pid=$!
log=$(mktemp)
trap 'kill "$moto_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
    sleep 0.1
done
export P2C_MOTO_ENDPOINT="http://127.0.0.1:$port"
echo "moto server on $P2C_MOTO_ENDPOINT"

status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
