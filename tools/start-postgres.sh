#!/usr/bin/env bash
# Installs (from Debian's packages) and starts a local PostgreSQL for the conformance run,
# and prints the server URL the tests take in FIRN_TEST_POSTGRES. Idempotent.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
fi
version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start >/dev/null 2>&1 || true
# A cluster that was not shut down cleanly replays its log first, which on a loaded
# machine takes longer than a clean start: wait up to two minutes for it to take queries.
for i in $(seq 1 600); do
  if pg_isready -q -h 127.0.0.1 -p 5432 &&
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'firn';\"" >/dev/null 2>&1; then
    break
  fi
  if [ "$i" = 600 ]; then
    echo "PostgreSQL did not accept connections within two minutes" >&2
    exit 1
  fi
  sleep 0.2
done
echo "postgres://postgres:firn@127.0.0.1:5432"
