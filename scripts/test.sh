#!/usr/bin/env bash
# Install everything the tests need (Python packages and real servers), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k metrics
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --servers
# One process: the suite's timing tests each want the machine to themselves. (Run by hand,
# `-n 2 --dist loadfile` spreads test files over two cores in about half the time, at the
# price of those tests' figures on a busier host.)
exec .venv/bin/python -m pytest "$@"
