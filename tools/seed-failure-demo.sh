#!/usr/bin/env bash
# The failure Firn exists to end, on your machine: a job writes files to an S3 bucket (the
# project's S3 server, started here) whose LIST lags behind writes, as S3-compatible stores
# under load do. A listing-based commit publishes what LIST shows and loses files; the same
# job committed through Firn loses none. Prints both counts.
#   tools/seed-failure-demo.sh [TASKS [FILES_PER_TASK [LIST_LAG_MS]]]   (default 8 10 300)
set -euo pipefail
cd "$(dirname "$0")/.."
export FIRN_TEST_S3="$(tools/start-s3.sh firn-test)"
cargo run --quiet -p firn-tests --bin seed-failure -- "${1:-8}" "${2:-10}" "${3:-300}"
