"""A fleet expanded into probe runs, and the share of them one shard runs.

Runs are numbered in file order (target, then profile, then repetition). Shard I of N runs
every run whose number is I - 1 modulo N: deterministic, disjoint, together exactly the whole
fleet, and balanced within one run. Each run's id ``target/profile/index`` lands in its
result, so a merged report can tell a missing or duplicated run from a present one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from qoe.errors import ConfigError
from qoe.fleet.config import Fleet, Target

__all__ = ["Run", "Shard", "expand", "parse_shard"]


@dataclass(frozen=True)
class Run:
    target: Target
    profile: str
    index: int

    @property
    def id(self) -> str:
        return f"{self.target.name}/{self.profile}/{self.index}"


@dataclass(frozen=True)
class Shard:
    index: int
    """1-based."""
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def expand(fleet: Fleet, shard: Shard | None = None) -> list[Run]:
    """Every run of the fleet in canonical order, or the given shard's share of them."""
    runs = [
        Run(target, profile, i)
        for target in fleet.targets
        for profile in target.profiles
        for i in range(target.count)
    ]
    if shard is None:
        return runs
    return [run for k, run in enumerate(runs) if k % shard.count == shard.index - 1]


def parse_shard(text: str, environ: dict[str, str] | None = None) -> Shard:
    """``I/N`` (1-based), or ``auto/N`` with I from a Kubernetes Indexed Job's
    ``JOB_COMPLETION_INDEX`` (0-based, so I = index + 1)."""
    env = os.environ if environ is None else environ
    match = re.fullmatch(r"\s*(auto|\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--shard: expected I/N (e.g. 2/3) or auto/N, got {text!r}")
    count = int(match.group(2))
    if match.group(1) == "auto":
        raw = env.get("JOB_COMPLETION_INDEX")
        if raw is None or not raw.isdigit():
            raise ConfigError("--shard auto/N needs JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job)")
        index = int(raw) + 1
    else:
        index = int(match.group(1))
    if not 1 <= index <= count:
        raise ConfigError(f"--shard: shard {index} is not between 1 and {count}")
    return Shard(index, count)
