#!/usr/bin/env bash
# Creates tools/.venv with the Python clients the end-to-end tests use (grpcio, pyarrow, pyiceberg).
# Idempotent: does nothing when the venv already matches requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
req="$here/python/requirements.txt"
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "python clients installed in $venv"
