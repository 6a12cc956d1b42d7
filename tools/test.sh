#!/usr/bin/env bash
# Runs every test of Firn on a fresh machine: installs what the tests need (the Python
# clients; protoc is vendored by the build), builds once, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-python.sh
# One build shared by all test binaries; the end-to-end tests also run the firn binary.
cargo build --workspace --bins --tests --locked
cargo test --workspace --locked -- --test-threads=2
