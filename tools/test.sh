#!/usr/bin/env bash
# Runs every test of Firn on a fresh machine: checks formatting and lints (cargo fmt,
# clippy -D warnings), installs what the tests need (the Python clients, PostgreSQL, the S3
# server; protoc is vendored by the build), builds once, runs the whole suite on SQLite +
# local disk, the end-to-end suite again on the other backend pairs, and closes with one
# summary line.
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
# The end-to-end suite again on the other backend pairs ({SQLite, PostgreSQL} x {local, S3};
# the S3 server is moto on loopback). Which modules run where is in the README's "Tests".
pg="$(tools/start-postgres.sh)"
s3="$(tools/start-s3.sh firn-test)"
e2e() { cargo test --locked -p firn-tests --test it -- --test-threads=2 "$@" 2>&1 | tee -a "$log" || status=$?; }
# PostgreSQL + local disk: everything but the README walkthrough (its config file names
# SQLite) and the s3 module (its own backend, run above).
FIRN_TEST_POSTGRES="$pg" e2e --skip readme:: --skip s3::
# SQLite + S3: everything but the README walkthrough and Spark (whose runtime here has no
# S3 client; it reads S3 through s3a with its own keys).
FIRN_TEST_S3="$s3" e2e --skip readme:: --skip spark --skip s3::
# PostgreSQL + S3, the team deployment: commits, concurrency, faults, replicas, crash.
FIRN_TEST_POSTGRES="$pg" FIRN_TEST_S3="$s3" e2e commits:: concurrency:: faults:: replicas:: crash::
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
