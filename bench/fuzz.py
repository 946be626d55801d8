"""Fuzzing, longer: the properties of tests/test_fuzz.py with many more examples and fresh
draws each run.

The suite runs each property a few dozen to a few hundred times, derandomised, so it stays
fast and never fails for a new draw. This runs them with ``--examples`` each (every one a
new random draw), which is where new findings come from; Hypothesis prints the least input
that fails. A finding becomes a regression test beside the code it is about.

    python bench/fuzz.py                        # 1,000 examples per property
    python bench/fuzz.py --examples 5000 -k sdp # one property, longer
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=1000, help="examples per property (default 1000)")
    parser.add_argument("-k", dest="select", default="", help="only the properties whose name matches")
    args = parser.parse_args()
    if args.examples < 1:
        parser.error("--examples must be at least 1")
    env = {**os.environ, "QOE_FUZZ_EXAMPLES": str(args.examples), "QOE_FUZZ_RANDOM": "1"}
    command = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider"]
    command += ["--hypothesis-show-statistics", "-W", "ignore::pytest.PytestUnraisableExceptionWarning"]
    if args.select:
        command += ["-k", args.select]
    print(f"{args.examples} examples per property, fresh draws", flush=True)
    began = time.monotonic()
    code = subprocess.call(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    print(f"fuzzing took {time.monotonic() - began:.0f} s; {'no finding' if code == 0 else 'FINDINGS above'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
