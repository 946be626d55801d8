"""Push probe results to a Prometheus Pushgateway, so short CI runs reach Prometheus too.

Results are pushed as the same families ``/metrics`` serves, under job ``qoe`` and an
``instance`` grouping label that is distinct per runner (host name, and shard when sharded),
so N shards pushing at once never replace each other's group.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, push_to_gateway

from qoe import clock
from qoe.errors import QoeError
from qoe.exporter.metrics import ResultCollector
from qoe.redact import redact_url
from qoe.result import ProbeResult

__all__ = ["PushError", "push_results"]

JOB = "qoe"


class PushError(QoeError):
    """The Pushgateway could not be reached or refused the push."""


async def push_results(
    gateway: str,
    results: Sequence[ProbeResult],
    *,
    instance: str | None = None,
    job: str = JOB,
    timeout: float = 10.0,
) -> None:
    """Replace this runner's group on ``gateway`` with ``results``' metrics."""
    registry = CollectorRegistry()
    collector = ResultCollector(registry)
    now = clock.wall()
    for result in results:
        collector.observe(result, now)
    grouping = {"instance": instance or socket.gethostname()}

    def push() -> None:
        push_to_gateway(gateway, job=job, registry=registry, grouping_key=grouping, timeout=timeout)

    try:
        await asyncio.get_running_loop().run_in_executor(None, push)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise PushError(f"push to {redact_url(gateway)} failed: {exc}") from exc
