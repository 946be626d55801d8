#!/usr/bin/env bash
# Install everything the tests need (Python packages and real servers), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --servers
# Two processes, a test file each (pytest-xdist): the servers a file starts stay with its
# tests, and the suite takes about half as long on two cores.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
