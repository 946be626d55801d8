#!/usr/bin/env bash
# Install everything the tests need (Python packages and real servers), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --servers
# Three workers share the machine: most of the suite plays media in real time and waits far
# more than it computes. End-to-end tests run side by side; those marked `alone` (a flood,
# the checks whose ground truth a busy host would move) run with no other end-to-end test
# beside them (tests/sharing.py). `-n 0` runs one test at a time.
exec .venv/bin/python -m pytest -n 3 --dist load --maxschedchunk 1 "$@"
