#!/usr/bin/env bash
# Install everything the tests need (Python packages and real servers), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --servers
# One test at a time by default: every test is known to pass so, with two CPU burners beside
# it. `scripts/test.sh -n 3` shares the machine between three workers (tests/sharing.py: the
# end-to-end tests side by side, those marked `alone` with no other beside them) and takes
# under half the time, but a few timing tests still fail there now and then.
exec .venv/bin/python -m pytest "$@"
