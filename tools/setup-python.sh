#!/usr/bin/env bash
# Creates tools/.venv with the Python clients the end-to-end tests use (grpcio, pyarrow,
# pyiceberg, pyspark with the Iceberg Spark runtime jar, duckdb with its extensions).
# Idempotent: does nothing when the venv already matches requirements.txt.
# Spark also needs a Java 17 runtime, installed below from Debian's packages if missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
req="$here/python/requirements.txt"
stamp="$venv/.requirements"
# Spark's JVM: Java 17 with keytool (for the TLS trust store), from Debian's packages when
# the machine has none.
if ! command -v java >/dev/null || ! command -v keytool >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
fi
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "python clients installed in $venv"
