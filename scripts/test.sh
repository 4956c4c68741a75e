#!/usr/bin/env bash
# The whole check, from a fresh clone: set up, then ruff, mypy --strict, the import contracts and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== import contracts"
.venv/bin/lint-imports --no-cache
echo "== pytest"
.venv/bin/python -m pytest "$@"
