#!/usr/bin/env bash
# Install everything the tests need (Python packages and real servers), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --servers
# Four pytest-xdist workers share the two cores (tests/sharing.py): the end-to-end tests
# run side by side (two `heavy` ones at most), those marked `alone` with no other end-to-end
# test beside them, and a slow test whose figures fail beside others is measured once more,
# alone. Each worker takes one test at a time, in the order tests/sharing.py gives.
# `scripts/test.sh -n 0` runs one test at a time in this process, as pytest alone would.
exec .venv/bin/python -m pytest -n 4 --dist load --maxschedchunk 1 "$@"
