#!/usr/bin/env bash
# Starts the S3-compatible server the tests and the README's S3 walkthrough use: moto's
# server (from tools/.venv, installed by tools/setup-python.sh) on loopback, in the
# background, creates the buckets named as arguments (if missing), and prints its endpoint
# URL (the tests take it in FIRN_TEST_S3). Idempotent: a server already answering on the
# port is reused. Port: FIRN_S3_PORT, default 9900.
#   tools/start-s3.sh lake      # -> http://127.0.0.1:9900, with a bucket "lake"
# moto keeps objects in memory: stopping it (kill the pid in tools/.s3/pid) forgets them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${FIRN_S3_PORT:-9900}"
endpoint="http://127.0.0.1:$port"
answering() { curl -s -o /dev/null --max-time 2 "$endpoint/moto-api/" ; }
if ! answering; then
  "$here/setup-python.sh" >&2
  state="$here/.s3"
  mkdir -p "$state"
  nohup "$here/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/log" 2>&1 &
  echo $! >"$state/pid"
  for i in $(seq 1 300); do
    if answering; then break; fi
    if [ "$i" = 300 ]; then
      echo "the S3 server did not answer on $endpoint within a minute; see $state/log" >&2
      exit 1
    fi
    sleep 0.2
  done
fi
# moto takes any access key; the buckets are made with placeholder ones.
if [ "$#" -gt 0 ]; then
  AWS_ACCESS_KEY_ID=firn AWS_SECRET_ACCESS_KEY=firn "$here/.venv/bin/python" - "$endpoint" "$@" <<'PY'
import sys
import boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for bucket in sys.argv[2:]:
    if bucket not in have:
        s3.create_bucket(Bucket=bucket)
PY
fi
echo "$endpoint"
