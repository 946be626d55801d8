"""Render a dashboard's time-series panels to a PNG from a live Prometheus.

No Grafana server can run here, so this draws what the dashboard's panels would show: each
``timeseries`` panel's own queries (template variables filled in as for the tests), run as
range queries against Prometheus, one subplot per panel, in the dashboard's order. It is
how the picture in the README was made from real probe data::

    python -m grafana.render --prometheus http://127.0.0.1:9090 \\
        --dashboard grafana/dashboards/qoe-overview.json --minutes 10 --out docs/overview.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from grafana.queries import substitute

__all__ = ["main", "render"]


def _query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return body["data"]["result"]  # type: ignore[no-any-return]


def _legend(metric: dict[str, str], template: str | None) -> str:
    if template:
        return (
            template.replace("{{", "{")
            .replace("}}", "}")
            .format_map({k: metric.get(k, "") for k in metric} | _Blank())
        )
    keys = [k for k in ("target", "profile", "phase", "quantile", "error", "region") if k in metric]
    return " ".join(metric[k] for k in keys) or "value"


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render(prometheus: str, dashboard: Path, out: Path, minutes: float, window: str = "2m") -> int:
    """Draw every time-series panel of ``dashboard``; returns how many panels had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(dashboard.read_text())
    panels = [p for p in board["panels"] if p.get("type") == "timeseries" and p.get("targets")]
    end = time.time()
    start = end - minutes * 60
    step = max(5.0, minutes * 60 / 240)
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 3.1 * rows), squeeze=False)
    drawn = 0
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel["title"], fontsize=10, loc="left")
        plotted = False
        for target in panel["targets"]:
            expr = substitute(
                target["expr"], window=window, rate_interval=window, time_range=f"{int(minutes)}m"
            )
            for series in _query_range(prometheus, expr, start, end, step):
                points = [
                    (float(t) - end, float(v))
                    for t, v in series["values"]
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                ax.plot([x / 60 for x in xs], ys, label=_legend(series["metric"], target.get("legendFormat")))
                plotted = True
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if plotted:
            drawn += 1
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="grey")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("minutes before now", fontsize=8)
    figure.suptitle(f"{board['title']} (rendered from Prometheus)", fontsize=12)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    plt.close(figure)
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prometheus", required=True, metavar="URL")
    parser.add_argument("--dashboard", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", default="2m", help="what $window and $__rate_interval become")
    args = parser.parse_args(argv)
    drawn = render(args.prometheus, args.dashboard, args.out, args.minutes, args.window)
    print(f"{args.out}: {drawn} panels with data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
