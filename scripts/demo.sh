#!/usr/bin/env bash
# Set up, then run the connector twice against the bundled simulator and Azurite,
# showing incremental pickup and dedup, and print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-checkov
.venv/bin/python scripts/demo.py "$@"
