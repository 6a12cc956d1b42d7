#!/usr/bin/env bash
# Runs every test of Firn on a fresh machine: checks formatting and lints (cargo fmt,
# clippy -D warnings), installs what the tests need (the Python clients, PostgreSQL; protoc
# is vendored by the build), builds once, runs the whole suite
# on SQLite, the end-to-end suite again on PostgreSQL, and closes with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
# Formatting and lints first: a change that fails them fails CI.
cargo fmt --check
cargo clippy --workspace --all-targets --locked -- -D warnings
tools/setup-python.sh
# One build shared by all test binaries; the end-to-end tests also run the firn binary.
cargo build --workspace --bins --tests --locked
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log" || status=$?
# The same end-to-end suite once more with the catalog on PostgreSQL.
pg="$(tools/start-postgres.sh)"
FIRN_TEST_POSTGRES="$pg" cargo test --locked -p firn-tests --test it -- --test-threads=2 \
  --skip cli:: --skip crash:: --skip python:: --skip readme:: --skip security:: \
  --skip ops::metrics --skip ops::a_request_in_flight 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
