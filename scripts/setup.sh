#!/usr/bin/env bash
# Create .venv with the pinned Python packages, .venv-checkov with the pinned checkov
# (it pins an old `packaging`, so it gets its own venv) and install the npm devDependencies
# (node_modules/: azurite, and @kusto/language-service-next for the KQL checks in the tests).
# Idempotent: safe to run again; the other scripts call it. `--no-checkov` skips the
# checkov venv (only the infra tests need it; the demo passes this).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
if [ "${1:-}" != "--no-checkov" ] && { [ ! -x .venv-checkov/bin/checkov ] || [ requirements-checkov.txt -nt .venv-checkov/.installed ]; }; then
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
  touch .venv-checkov/.installed
fi
if [ ! -x node_modules/.bin/azurite-blob ] || [ ! -f node_modules/@kusto/language-service-next/package.json ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
