"""Build the QoE dashboards and the Grafana twin of the alert rules.

    python3 -m grafana.build           # rewrite dashboards/*.json and alerts/grafana-alerting.yaml
    python3 -m grafana.build --check   # exit 1 if a committed file differs from a fresh build

The dashboards are built with grafana-foundation-sdk (Grafana 11.6 schema) over the metric
families of qoe/exporter/metrics.py. Threshold lines and bands are the alert thresholds, with
the same sources (docs/SOURCES.md): join 2 s and stall ratio 1 % (Krishnan & Sitaraman,
IMC 2012), A/V offset acceptable within +90/-185 ms and detectable beyond +45/-125 ms
(ITU-R BT.1359-1), chat echo 1 s (a project choice, see there).

Dashboard variables: ``$datasource`` (a Prometheus data source), ``$kind``, ``$target``,
``$profile`` (and ``$probe`` on the detail dashboard) from label_values, and ``$window``, how
far back rates look. Probes run about once a minute, so a rate over ``$__rate_interval`` would
mostly see no run at all; rates use ``$window`` (default 15m) and at-a-glance figures the
dashboard's time range (``$__range``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana import alerting
from grafana.overview import overview
from grafana.probe_detail import probe_detail
from grafana.profiles import profiles
from grafana.queries import DASHBOARD_DIR, RULES_FILE

__all__ = ["DASHBOARDS", "build_all", "main"]

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "qoe-overview.json": overview,
    "qoe-probe-detail.json": probe_detail,
    "qoe-profiles.json": profiles,
}
ALERTING_FILE = RULES_FILE.parent / "grafana-alerting.yaml"


def build_all() -> dict[Path, str]:
    """Every generated file and its text."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {DASHBOARD_DIR / name: encoder.encode(make().build()) + "\n" for name, make in DASHBOARDS.items()}
    out[ALERTING_FILE] = alerting.render()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m grafana.build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed file is not a fresh build"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in build_all().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'differs' if args.check else 'wrote'}: {path}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
