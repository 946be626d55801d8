#!/usr/bin/env bash
# Install everything the tests need (Python packages and real servers), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --servers
exec .venv/bin/python -m pytest "$@"
